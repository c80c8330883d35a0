from hypothesis import given, settings
from hypothesis import strategies as st

from compliance.guard import MEDICAL_FIELD_NAMES, guard_payload, phi_field_names, register_allow_list

register_allow_list("guard-test", ["id", "email", "data", "items", "plan"])

PHI_NAMES = sorted(phi_field_names())
keys = st.one_of(st.sampled_from(PHI_NAMES), st.sampled_from(["id", "email", "data", "x", "plan"]), st.text(max_size=8))
payloads = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)


def _keys(value):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            yield from _keys(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _keys(sub)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(keys, payloads, max_size=8), st.sampled_from(["guard-test", "webhook:7", "nobody"]))
def test_no_medical_field_leaves_at_any_depth_for_a_destination_not_allowed_it(payload, destination):
    guarded = guard_payload(destination, payload)
    assert not set(_keys(guarded)) & set(PHI_NAMES)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(keys, payloads, max_size=8))
def test_only_allow_listed_top_level_fields_leave(payload):
    assert set(guard_payload("guard-test", payload)) <= {"id", "email", "data"}
    assert guard_payload("nobody", payload) == {}


def test_registered_phi_fields_are_medical_for_the_guard():
    # leads.Lead.persona and assessment, contacts.Order.items, Subscription.plan are registered PHI.
    assert {"persona", "assessment", "items", "plan"} <= phi_field_names()
    assert MEDICAL_FIELD_NAMES <= phi_field_names()


def test_a_medical_field_leaves_only_when_the_caller_allows_it_by_name():
    payload = {"id": 1, "plan": "glp1", "data": {"medications": ["x"], "weight": 80, "ok": True}}
    assert guard_payload("guard-test", payload) == {"id": 1, "data": {"ok": True}}
    allowed = guard_payload("guard-test", payload, phi_allowed=["plan", "weight"])
    assert allowed == {"id": 1, "plan": "glp1", "data": {"weight": 80, "ok": True}}


def test_phi_allowed_cannot_admit_a_non_medical_field_the_list_lacks():
    assert guard_payload("guard-test", {"id": 1, "secret_note": "x"}, phi_allowed=["secret_note"]) == {"id": 1}


def test_guard_does_not_mutate_the_payload():
    payload = {"id": 1, "data": {"diagnosis": "x"}}
    guard_payload("guard-test", payload)
    assert payload == {"id": 1, "data": {"diagnosis": "x"}}


def test_no_phi_name_is_an_envelope_key():
    """The guard drops PHI names at any depth, so a model field registered as PHI under a generic
    name (an ExportBundle's `data` once) would silently empty every webhook's `data`."""
    from compliance.guard import phi_field_names

    assert not phi_field_names() & {"id", "type", "timestamp", "data", "topic", "event", "object", "changed"}
