from __future__ import annotations

import pytest

from telephony_service.domain.phi import (
    ALLOWED_VARIABLES,
    CLINICAL_TERMS,
    find_clinical_terms,
    lint_template,
)

CLEAN = "{{ practice }}: we missed your call. Book at {{ link }} or call {{ practice_number }}."


def test_it_passes_a_template_that_carries_only_name_number_and_link() -> None:
    assert lint_template(CLEAN, ["practice", "link", "practice_number", "first_text"]) == []


def test_it_allows_exactly_the_practice_its_number_the_link_and_first_text() -> None:
    assert {"practice", "practice_number", "link", "first_text"} == ALLOWED_VARIABLES


@pytest.mark.parametrize(
    "variable", ["reason", "category", "transcription", "diagnosis", "task", "notes", "dob"]
)
def test_it_rejects_a_variable_that_would_carry_task_data(variable: str) -> None:
    problems = lint_template(CLEAN, ["practice", variable])
    assert len(problems) == 1
    assert f"{{{{ {variable} }}}} is not allowed" in problems[0]


@pytest.mark.parametrize("variable", ["name", "first_name", "last_name", "patient_name"])
def test_it_rejects_a_patient_name_because_the_phone_may_be_shared(variable: str) -> None:
    problems = lint_template(CLEAN, ["practice", variable])
    assert problems == [
        f"{{{{ {variable} }}}} is not allowed: a name is health information on a phone "
        "that others may read"
    ]


def test_it_rejects_a_text_that_does_not_name_the_practice() -> None:
    assert lint_template("We missed your call. Book at {{ link }}.", ["link"]) == [
        "the text does not say who it is from: add {{ practice }}"
    ]


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("Your diagnosis is ready", "diagnosis"),
        ("Your test results are in", "test results"),
        ("Your lab work is in", "lab"),
        ("about your biopsy", "biopsy"),
        ("Cancer center", "cancer"),
        ("Oncology follow-up", "oncology"),
        ("HIV clinic", "hiv"),
        ("your pregnancy", "pregnancy"),
        ("prenatal visit", "prenatal"),
        ("your prescription is ready", "prescription"),
        ("medication question", "medication"),
        ("Your REFILL request", "refill"),
        ("new dosage", "dosage"),
        ("Mental Health services", "mental health"),
        ("psychiatry appointment", "psychiatry"),
        ("therapy session", "therapy"),
        ("dermatology", "dermatology"),
        ("cardiology", "cardiology"),
        ("STD clinic", "std"),
        ("STI clinic", "sti"),
        ("vaccine clinic", "vaccine"),
        ("before your surgery", "surgery"),
        ("mammogram reminder", "mammogram"),
        ("colonoscopy prep", "colonoscopy"),
        ("insulin pickup", "insulin"),
        ("your x-ray", "x-ray"),
        ("your X ray", "x ray"),
        ("your xray", "xray"),
        ("MRI booked", "mri"),
        ("your labs", "labs"),
        ("two tests", "tests"),
        ("OB/GYN", "ob/gyn"),
    ],
)
def test_it_rejects_clinical_terms_whatever_their_case(text: str, term: str) -> None:
    assert find_clinical_terms(text) == [term]
    assert lint_template(f"{{{{ practice }}}}: {text}", ["practice"]) == [
        f'"{term}" is clinical detail, which a text must not carry'
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Get the latest times at {{ link }}",
        "Please call us back at your earliest convenience",
        "Our labor day hours",
        "We collaborate with your insurer",
        "A contest for patients",
        "We'll call you back soon about your appointment",
        "Your visit with the doctor",
        "Reply STOP to opt out.",
        "Reply HELP for help",
        "As a result, we are closed",
        "Sorry we missed your call; book at {{ link }}",
    ],
)
def test_it_does_not_find_clinical_terms_inside_other_words(text: str) -> None:
    assert find_clinical_terms(text) == []


def test_it_reports_each_term_once_in_the_order_it_appears() -> None:
    text = "Results: your MRI results and your mri, STD testing"
    assert find_clinical_terms(text) == ["results", "mri", "std", "testing"]


def test_it_ignores_template_comments() -> None:
    assert find_clinical_terms("{# never mention a diagnosis here #}Hello") == []


def test_it_lists_every_problem_of_a_bad_template() -> None:
    problems = lint_template(
        "Hi {{ first_name }}, your {{ reason }} results", ["first_name", "reason"]
    )
    assert len(problems) == 4
    assert problems[0].startswith("{{ first_name }} is not allowed")
    assert problems[1].startswith("{{ reason }} is not allowed")
    assert problems[2] == "the text does not say who it is from: add {{ practice }}"
    assert problems[3] == '"results" is clinical detail, which a text must not carry'


def test_it_keeps_its_word_list_lower_case_so_matching_stays_case_insensitive() -> None:
    assert all(term == term.lower() for term in CLINICAL_TERMS)
