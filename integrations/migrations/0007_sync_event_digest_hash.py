"""The sync log's payload digests get a hash index instead of a B-tree.

Digests are random 64-character hex strings: the B-tree grew to about half the table's size
(303 MB beside 523 MB of rows for 2.4 million rows) and sent each insert to a random page, the
applier's dearest write. Staff search the log by digest with an exact match, which is all a hash
index answers (64 MB for the same rows). Built and dropped concurrently: the log takes writes
throughout. If the concurrent build fails, PostgreSQL leaves an invalid index behind: drop it
(DROP INDEX CONCURRENTLY sync_event_digest_hash) and migrate again.
"""

from django.contrib.postgres.indexes import HashIndex
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("integrations", "0006_inbox_takes_event_keys")]

    operations = [
        AddIndexConcurrently(
            model_name="syncevent",
            index=HashIndex(fields=["payload_digest"], name="sync_event_digest_hash"),
        ),
        RemoveIndexConcurrently(model_name="syncevent", name="sync_event_digest_idx"),
    ]
