"""Demo data of the contacts app: employers that offer the programme to their staff, the people
we deal with there (benefits leads, HR), their support tickets and the sales team's notes.

The contacts app runs before leads (INSTALLED_APPS order), so these are its own contacts, not
the leads app's. Everything goes through the services, so audit and outbox rows are real.
Idempotent: skips when its companies exist.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model

from contacts.models import Company, Contact, Ticket
from contacts.services import company_upsert, contact_create, note_create, ticket_create, ticket_update

# name, domain, industry, size, country, time zone, [(first, last, phone)]
COMPANIES = [
    (
        "Northwind Logistics",
        "northwind-logistics.demo.example",
        "Logistics",
        1200,
        "US",
        "America/Chicago",
        [("Priya", "Raman", "+13125550141"), ("Tom", "Becker", "")],
    ),
    (
        "Brightwater Schools",
        "brightwater-schools.demo.example",
        "Education",
        640,
        "US",
        "America/New_York",
        [("Alicia", "Ferreira", "+16175550172"), ("Marcus", "Hill", "")],
    ),
    (
        "Harbor City Clinic",
        "harborcity-clinic.demo.example",
        "Healthcare",
        85,
        "US",
        "America/Los_Angeles",
        [("Naomi", "Sato", "+14155550188")],
    ),
    (
        "Quill & Ledger Accounting",
        "quill-ledger.demo.example",
        "Professional services",
        140,
        "GB",
        "Europe/London",
        [("Oliver", "Grant", "+442079460123"), ("Hannah", "Price", "")],
    ),
    (
        "Summit Outdoor Co.",
        "summit-outdoor.demo.example",
        "Retail",
        380,
        "CA",
        "America/Vancouver",
        [("Jessie", "Tremblay", "+16045550107")],
    ),
    (
        "Larkspur Pharmacy Group",
        "larkspur-pharmacy.demo.example",
        "Pharmacy",
        220,
        "DE",
        "Europe/Berlin",
        [("Katrin", "Vogel", "+4930901820"), ("Jonas", "Keller", "")],
    ),
]

# (company index, person index), subject, body, priority, status it ends in
TICKETS = [
    (
        (0, 0),
        "Eligibility file upload rejected 3 rows",
        "The March eligibility file came back with 3 rejected rows; the error says 'unknown plan code'.",
        "high",
        Ticket.Status.OPEN,
    ),
    (
        (0, 1),
        "Invoice for March shows 1,150 seats instead of 1,200",
        "Our headcount went up on 1 March; the invoice still bills the February number.",
        "normal",
        Ticket.Status.PENDING,
    ),
    (
        (1, 0),
        "Request: single sign-on for the member portal",
        "IT asks whether the portal can use our Microsoft Entra tenant for sign-in.",
        "low",
        Ticket.Status.OPEN,
    ),
    (
        (2, 0),
        "Enrollment link in the welcome email is broken",
        "Staff who joined this week get a 404 from the enrollment link in the welcome email.",
        "urgent",
        Ticket.Status.RESOLVED,
    ),
    (
        (3, 1),
        "Quarterly utilization report misses two departments",
        "The Q1 report lists Audit and Tax but not Advisory or Payroll.",
        "normal",
        Ticket.Status.CLOSED,
    ),
    (
        (5, 0),
        "Add a second billing contact",
        "Please copy Jonas Keller on invoices from next month.",
        "low",
        Ticket.Status.RESOLVED,
    ),
]

NOTES = [
    (0, "Renewal call booked for next quarter; wants utilization by depot before then."),
    (1, "Interested in adding the sleep programme for teachers over the summer break."),
    (3, "Prefers email over calls. Budget sign-off sits with the managing partner."),
    (5, "Piloting with two stores first; decision on the rest after 90 days."),
]


def seed(*, actor, rng, stdout) -> str:
    if Company.objects.filter(domain__in=[row[1] for row in COMPANIES]).exists():
        return "demo companies already loaded"
    User = get_user_model()
    sales = list(User.objects.filter(username__in=["sam.sales", "riley.sales"]).order_by("pk"))
    support = User.objects.filter(username="dana.admin").first()
    people: dict[tuple[int, int], Contact] = {}
    for index, (name, domain, industry, size, country, time_zone, staff) in enumerate(COMPANIES):
        company, _ = company_upsert(name=name, domain=domain, industry=industry, size=size, actor=actor)
        owner = sales[index % len(sales)] if sales else None  # not rng: the leads app's draws stay as they were
        for n, (first, last, phone) in enumerate(staff):
            people[index, n] = contact_create(
                actor=actor,
                email=f"{first}.{last}@{domain}".lower(),
                first_name=first,
                last_name=last,
                phone=phone,
                country=country,
                time_zone=time_zone,
                company=company,
                owner=owner,
                source="partner",
                tags=["employer"],
            )
    for person, subject, body, priority, status in TICKETS:
        ticket = ticket_create(contact=people[person], subject=subject, body=body, priority=priority, actor=actor)
        ticket_update(ticket=ticket, status=status, owner=support, actor=actor)
    for index, body in NOTES:
        contact = people[index, 0]
        note_create(contact=contact, body=body, author=contact.owner, actor=actor)
    return f"{len(COMPANIES)} companies, {len(people)} contacts, {len(TICKETS)} tickets, {len(NOTES)} notes"
