from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from jinja2 import UndefinedError

from telephony_service import wording
from telephony_service.domain.phi import find_clinical_terms
from telephony_service.domain.segments import count_segments
from telephony_service.wording import (
    MAX_SEGMENTS,
    RenderedSms,
    TemplateTooLong,
    lint_sms_template,
    render,
    render_sms,
    sms_template_variables,
)

SMS_DIR = wording.TEMPLATE_DIR / "sms"
SHIPPED = sorted(path.stem for path in SMS_DIR.glob("*.txt") if not path.name.startswith("_"))
PARTIALS = sorted(path.name for path in SMS_DIR.glob("_*.txt"))
AUTOMATED = ["text_back", "second_attempt", "final_message"]
ALWAYS_STOP = ["help_reply", "opt_in_confirmation"]
STOP_LINE = "Reply STOP to opt out."

# The longest data a text has to fit: a 40-character practice name and a 60-character link.
LONG_PRACTICE = "Greater Riverside Family Medical Centers"
LONG_LINK = "https://callbacks.example-practice-group.com/s/Ab3dE9xK2qLmN"
NUMBER = "(415) 555-0100"


def _context(**overrides: object) -> dict[str, object]:
    context: dict[str, object] = {
        "practice": "Sunrise Clinic",
        "practice_number": NUMBER,
        "link": "https://callbacks.example.com/s/Ab3dE9xK2q",
        "first_text": True,
    }
    context.update(overrides)
    return context


def test_it_ships_the_texts_the_service_sends() -> None:
    assert set(SHIPPED) >= {*AUTOMATED, "opt_out_confirmation", "help_reply"}
    assert PARTIALS == ["_stop.txt"]


def test_it_measures_worst_case_data_at_the_promised_lengths() -> None:
    assert len(LONG_PRACTICE) == 40
    assert len(LONG_LINK) == 60


@pytest.mark.parametrize("first_text", [True, False])
@pytest.mark.parametrize("name", SHIPPED)
def test_it_keeps_every_shipped_text_within_two_segments(name: str, first_text: bool) -> None:
    rendered = render_sms(
        name, **_context(practice=LONG_PRACTICE, link=LONG_LINK, first_text=first_text)
    )
    assert rendered.encoding == "GSM-7"
    assert 1 <= rendered.segments <= MAX_SEGMENTS


@pytest.mark.parametrize("name", SHIPPED)
def test_it_passes_the_phi_lint_for_every_shipped_template(name: str) -> None:
    assert lint_sms_template((SMS_DIR / f"{name}.txt").read_text()) == []


@pytest.mark.parametrize("partial", PARTIALS)
def test_it_keeps_clinical_detail_out_of_the_shared_pieces(partial: str) -> None:
    assert find_clinical_terms((SMS_DIR / partial).read_text()) == []


@pytest.mark.parametrize("path", sorted(SMS_DIR.glob("*.txt")), ids=lambda path: path.name)
def test_it_writes_every_template_in_gsm_characters(path: Path) -> None:
    assert count_segments(path.read_text()).encoding == "GSM-7"


@pytest.mark.parametrize("first_text", [True, False])
@pytest.mark.parametrize("name", SHIPPED)
def test_it_names_the_practice_in_every_text(name: str, first_text: bool) -> None:
    assert "Sunrise Clinic" in render_sms(name, **_context(first_text=first_text)).body


@pytest.mark.parametrize("name", AUTOMATED)
def test_it_adds_the_stop_line_to_the_first_automated_text_of_a_thread(name: str) -> None:
    assert STOP_LINE in render_sms(name, **_context(first_text=True)).body
    assert "STOP" not in render_sms(name, **_context(first_text=False)).body


@pytest.mark.parametrize("name", AUTOMATED)
def test_it_gives_the_link_and_the_number_in_every_automated_text(name: str) -> None:
    body = render_sms(name, **_context()).body
    assert "https://callbacks.example.com/s/Ab3dE9xK2q" in body
    assert NUMBER in body


@pytest.mark.parametrize("first_text", [True, False])
@pytest.mark.parametrize("name", ALWAYS_STOP)
def test_it_always_tells_how_to_opt_out_in_help_and_opt_in_replies(
    name: str, first_text: bool
) -> None:
    assert STOP_LINE in render_sms(name, **_context(first_text=first_text)).body


def test_it_answers_help_with_the_practice_number() -> None:
    assert NUMBER in render_sms("help_reply", **_context()).body


def test_it_confirms_an_opt_out_once_and_plainly() -> None:
    body = render_sms("opt_out_confirmation", practice="Sunrise Clinic").body
    assert body == (
        "You're unsubscribed from Sunrise Clinic texts. No more messages will be sent. "
        "Reply START to resubscribe."
    )


def test_it_renders_replies_without_a_link() -> None:
    for name in ["opt_out_confirmation", "help_reply", "opt_in_confirmation"]:
        context = _context(first_text=False)
        del context["link"]
        assert render_sms(name, **context).segments == 1


def test_it_describes_what_it_rendered() -> None:
    rendered = render_sms("text_back", **_context(first_text=False))
    assert rendered == RenderedSms(
        body=(
            "Sunrise Clinic: sorry we missed your call. We'll call you back soon. To book now, "
            "go to https://callbacks.example.com/s/Ab3dE9xK2q or call (415) 555-0100."
        ),
        encoding="GSM-7",
        segments=1,
    )


def test_it_strips_control_characters_from_a_practice_name() -> None:
    body = render_sms("text_back", **_context(practice="Sunrise\x07 Clinic\x00\x1b")).body
    assert body.startswith("Sunrise Clinic: ")
    assert not any(ord(ch) < 32 for ch in body)


def test_it_keeps_a_curly_apostrophe_in_a_practice_name_from_doubling_the_cost() -> None:
    rendered = render_sms("text_back", **_context(practice="O\u2019Neil Family Practice"))
    assert rendered.encoding == "GSM-7"
    assert rendered.body.startswith("O'Neil Family Practice: ")


def test_it_collapses_whitespace_from_data_and_template() -> None:
    body = render_sms("text_back", **_context(practice=" Sunrise\u00a0\n Clinic ")).body
    assert body.startswith("Sunrise Clinic: ")
    assert "  " not in body
    assert body == body.strip()


def test_it_refuses_to_render_a_text_with_a_missing_variable() -> None:
    with pytest.raises(UndefinedError):
        render_sms("text_back", practice="Sunrise Clinic", first_text=True)


def test_it_refuses_a_practice_name_that_would_push_a_text_past_two_segments() -> None:
    with pytest.raises(TemplateTooLong, match="limit is 2"):
        render_sms("text_back", **_context(practice="Sunrise Clinic " * 12))


@pytest.fixture
def template_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "sms").mkdir()
    monkeypatch.setattr(wording, "TEMPLATE_DIR", tmp_path)
    wording._environment.cache_clear()
    wording._template.cache_clear()
    yield tmp_path
    wording._environment.cache_clear()
    wording._template.cache_clear()


def test_it_refuses_a_deliberately_long_template(template_dir: Path) -> None:
    (template_dir / "sms" / "rambling.txt").write_text(
        "{{ practice }}: " + "We are writing to let you know about your call. " * 7
    )
    with pytest.raises(TemplateTooLong, match=r"sms/rambling.txt renders to 3 GSM-7 segments"):
        render_sms("rambling", practice="Sunrise Clinic")


def test_it_measures_ucs2_against_the_smaller_limit(template_dir: Path) -> None:
    (template_dir / "sms" / "emoji.txt").write_text("{{ practice }} \U0001f600 " + "x" * 130)
    with pytest.raises(TemplateTooLong, match="3 UCS-2 segments"):
        render_sms("emoji", practice="Sunrise Clinic")


def test_it_finds_the_variables_a_template_uses() -> None:
    source = '{{ practice }} {{ link }} {% include "sms/_stop.txt" %}{% if first_text %}{% endif %}'
    assert sms_template_variables(source) == {"practice", "link", "first_text"}


def test_it_lints_a_manager_template_that_carries_task_data() -> None:
    problems = lint_sms_template("Hi {{ first_name }}, about your {{ reason }}: call us")
    assert len(problems) == 3
    assert problems[0].startswith("{{ first_name }} is not allowed")
    assert problems[1].startswith("{{ reason }} is not allowed")
    assert problems[2] == "the text does not say who it is from: add {{ practice }}"


def test_it_lints_a_manager_template_that_mentions_results() -> None:
    assert lint_sms_template("{{ practice }}: your lab results are ready") == [
        '"lab" is clinical detail, which a text must not carry',
        '"results" is clinical detail, which a text must not carry',
    ]


def test_it_reports_a_template_that_does_not_parse() -> None:
    problems = lint_sms_template("{{ practice }: hello")
    assert len(problems) == 1
    assert problems[0].startswith("line 1: ")


def test_it_still_renders_spoken_wording() -> None:
    assert render("voice/greeting.txt", practice="Sunrise Clinic").startswith(
        "Thank you for calling Sunrise Clinic."
    )


def test_it_keeps_control_characters_out_of_spoken_wording() -> None:
    """Spoken wording goes into TwiML: one control character and Twilio cannot parse it."""
    from telephony_service.services.practices import PracticeCard
    from telephony_service.services.voice import greeting

    said = render("voice/greeting.txt", practice="Sunrise\x01 Clinic\x1b")
    assert said.startswith("Thank you for calling Sunrise Clinic.")
    twiml = greeting(
        PracticeCard(id=1, name="Sunrise\x01Clinic", number="+16175550100"), "https://x.test"
    )
    ElementTree.fromstring(twiml)


@pytest.mark.parametrize("template", ["text_back", "second_attempt", "final_message"])
def test_a_thread_text_with_the_opt_out_line_added_reads_as_the_template_renders_it(
    template: str,
) -> None:
    context = {
        "practice": "Riverside Family Medicine",
        "practice_number": "(617) 555-0100",
        "link": "https://cb.example.org/s/AbCdEfGhIjK",
    }
    ongoing = wording.render_sms(template, first_text=False, **context).body
    opening = wording.render_sms(template, first_text=True, **context).body

    assert wording.opt_out_line() == "Reply STOP to opt out."
    assert wording.opt_out_line() not in ongoing
    assert wording.with_opt_out_line(ongoing) == opening


def test_it_refuses_to_render_any_text_while_a_template_carries_clinical_detail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edited template file is linted before any text is rendered (and when the web and
    worker processes start), not only by this suite."""
    (tmp_path / "sms").mkdir()
    for path in SMS_DIR.glob("*.txt"):
        (tmp_path / "sms" / path.name).write_text(path.read_text())
    edited = tmp_path / "sms" / "text_back.txt"
    edited.write_text(edited.read_text().replace("{{ practice }}", "{{ practice }} (biopsy)", 1))
    monkeypatch.setattr(wording, "TEMPLATE_DIR", tmp_path)
    wording.check_sms_templates.cache_clear()
    try:
        with pytest.raises(wording.TemplateRejected, match=r'sms/text_back\.txt: "biopsy"'):
            render_sms("help_reply", practice="Riverside Family Medicine", number="(617) 555-0100")
        (tmp_path / "sms" / "_stop.txt").write_text("Reply STOP to end chemotherapy texts.")
        edited.write_text(SMS_DIR.joinpath("text_back.txt").read_text())
        with pytest.raises(wording.TemplateRejected, match=r'sms/_stop\.txt: "chemotherapy"'):
            wording.check_sms_templates()
        # A shared piece is held to the same variables as the texts that include it.
        (tmp_path / "sms" / "_stop.txt").write_text("About {{ reason }}: reply STOP to opt out.")
        with pytest.raises(wording.TemplateRejected, match=r"sms/_stop\.txt: \{\{ reason \}\}"):
            wording.check_sms_templates()
    finally:
        wording.check_sms_templates.cache_clear()
