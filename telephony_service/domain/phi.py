"""Keeps health information out of SMS templates.

A text can be read by anyone who picks up the phone, so it may carry only who is writing (the
practice and its number) and where to book (the link); see DESIGN.md section 3, "Content".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ALLOWED_VARIABLES: frozenset[str] = frozenset({"practice", "practice_number", "link", "first_text"})

_NAME_VARIABLES = frozenset(
    {"name", "first_name", "last_name", "full_name", "patient", "patient_name", "caller_name"}
)

# Diagnoses, specialties, results, medications and procedures. A specialty is as telling as a
# diagnosis ("your oncology visit"), so both are here. Words that are ordinary in scheduling
# wording ("appointment", "visit", "doctor", "care") are deliberately absent.
# fmt: off
CLINICAL_TERMS: frozenset[str] = frozenset(
    {
        # diagnoses and conditions
        "diagnosis", "diagnoses", "diagnosed", "prognosis", "disease",
        "disorder", "illness", "infection", "symptom", "injury", "allergy", "allergies",
        "cancer", "tumor", "tumour", "hiv", "std", "sti", "herpes", "hpv", "chlamydia",
        "gonorrhea", "syphilis", "hepatitis", "tuberculosis", "covid", "flu", "diabetes",
        "diabetic", "asthma", "copd", "hypertension", "cholesterol", "obesity", "weight loss",
        "pregnancy", "pregnant", "prenatal", "postpartum", "miscarriage", "abortion",
        "fertility", "ivf", "contraception", "contraceptive", "birth control", "iud",
        "depression", "anxiety", "bipolar", "schizophrenia", "adhd", "autism", "dementia",
        "alzheimer", "alzheimers", "addiction", "substance abuse", "overdose", "suicide",
        "suicidal", "eating disorder", "mental health", "behavioral health",
        "behavioural health", "sexual health", "reproductive health", "pain management",
        # specialties
        "oncology", "oncologist", "psychiatry", "psychiatric", "psychiatrist", "psychology",
        "psychologist", "psychotherapy", "therapy", "therapies", "therapist", "counseling",
        "counselling", "counselor", "rehab", "detox", "dermatology", "dermatologist",
        "cardiology", "cardiologist", "cardiac", "neurology", "neurologist", "urology",
        "urologist", "gastroenterology", "gastroenterologist", "endocrinology",
        "endocrinologist", "rheumatology", "nephrology", "pulmonology", "hematology",
        "immunology", "allergist", "infectious disease", "orthopedic", "orthopaedic",
        "orthopedics", "podiatry", "podiatrist", "chiropractic", "radiology", "pathology",
        "pediatric", "pediatrics", "paediatric", "obstetric", "obstetrics", "gynecology",
        "gynaecology", "gynecologist", "ob gyn", "ophthalmology", "bariatric", "specialist",
        "hospice", "palliative",
        # tests and results
        "results", "test", "testing", "test results", "lab", "laboratory", "bloodwork",
        "blood work", "blood test", "blood", "biopsy", "biopsies", "screening", "scan",
        "ct scan", "cat scan", "mri", "x ray", "ultrasound", "sonogram", "mammogram",
        "colonoscopy", "colonoscopies", "endoscopy", "ekg", "ecg", "eeg", "pap smear",
        "specimen", "imaging", "abnormal",
        # medications
        "prescription", "prescribed", "rx", "medication", "medicine", "meds", "refill",
        "dosage", "dose", "pharmacy", "insulin", "antibiotic", "antidepressant", "opioid",
        "methadone", "suboxone", "naloxone", "narcan", "pill", "vaccine", "vaccination",
        "immunization", "injection", "inhaler",
        # procedures and treatment
        "surgery", "surgeries", "surgical", "surgeon", "procedure", "vasectomy", "transplant",
        "dialysis", "chemotherapy", "chemo", "radiation", "treatment",
    }
)
# fmt: on


def _term_pattern(term: str) -> str:
    # "x ray" also matches "x-ray" and "xray"; "ob gyn" also "ob/gyn"; a trailing "s" covers
    # the regular plural.
    return r"[\s/-]?".join(re.escape(word) for word in term.split()) + "s?"


# Longest first, so "test results" is reported as one term rather than as "test". Letters and
# digits on either side stop a match, so "latest" and "labor" are not "test" and "lab".
_CLINICAL = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    + "|".join(_term_pattern(term) for term in sorted(CLINICAL_TERMS, key=len, reverse=True))
    + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


def find_clinical_terms(text: str) -> list[str]:
    found: list[str] = []
    for match in _CLINICAL.finditer(_JINJA_COMMENT.sub(" ", text)):
        term = " ".join(match.group().lower().split())
        if term not in found:
            found.append(term)
    return found


def lint_template(source: str, variables: Iterable[str], *, whole_text: bool = True) -> list[str]:
    """What a text template must not do. `whole_text` False: a piece other templates
    include (it need not name the practice; the text around it does)."""
    used = set(variables)
    problems: list[str] = []
    for name in sorted(used - ALLOWED_VARIABLES):
        if name in _NAME_VARIABLES:
            problems.append(
                f"{{{{ {name} }}}} is not allowed: a name is health information on a phone "
                "that others may read"
            )
        else:
            problems.append(
                f"{{{{ {name} }}}} is not allowed: a text may use only "
                + ", ".join(f"{{{{ {allowed} }}}}" for allowed in sorted(ALLOWED_VARIABLES))
            )
    if whole_text and "practice" not in used:
        problems.append("the text does not say who it is from: add {{ practice }}")
    for term in find_clinical_terms(source):
        problems.append(f'"{term}" is clinical detail, which a text must not carry')
    return problems
