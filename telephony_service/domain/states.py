"""US states whose contact rules are stricter than the federal 08:00-21:00 window.

The compliance gate intersects every entry with its own 08:00-20:00 floor, so an entry only has
to say what a state adds. Published summaries of these laws disagree in places; where they do,
the stricter reading is taken, because a message sent a day late costs little and one sent in
breach costs a fine per message. This is not legal advice: review it with counsel when a state
changes its law.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from types import MappingProxyType

Hours = tuple[time, time]


@dataclass(frozen=True)
class StateRule:
    # Allowed local hours for Monday (index 0) to Sunday (index 6); None means no contact at all
    # that day. Ends are exclusive: 20:00 means the last allowed minute is 19:59.
    hours: tuple[Hours | None, ...]
    # True where the state forbids contact on its legal holidays (federal ones included).
    no_state_holidays: bool = False


def _rule(
    weekdays: Hours,
    *,
    saturday: Hours | None = None,
    sunday: Hours | None = None,
    same_all_week: bool = False,
    no_state_holidays: bool = False,
) -> StateRule:
    if same_all_week:
        saturday = sunday = weekdays
    return StateRule(
        hours=(weekdays,) * 5 + (saturday, sunday),
        no_state_holidays=no_state_holidays,
    )


def _h(start: int, end: int, start_minute: int = 0) -> Hours:
    return time(start, start_minute), time(end, 0)


STATE_RULES: Mapping[str, StateRule] = MappingProxyType(
    {
        # Alabama: 08-20, never on Sundays or state holidays.
        "AL": _rule(_h(8, 20), saturday=_h(8, 20), sunday=None, no_state_holidays=True),
        # California: 09-21 for automatic dialing (Pub. Util. Code 2872); texts from this service
        # are automated, so the 09:00 start applies.
        "CA": _rule(_h(9, 21), same_all_week=True),
        # Connecticut: 09-20 every day since its 2023 amendment.
        "CT": _rule(_h(9, 20), same_all_week=True),
        # Florida (FTSA): 08-20, which is the floor; listed so the table shows it was considered.
        # Its 3-per-24 h cap is the gate's own attempt cap.
        "FL": _rule(_h(8, 20), same_all_week=True),
        # Illinois: summaries say 08-21 or 09-21; the later start is taken.
        "IL": _rule(_h(9, 21), same_all_week=True),
        # Kentucky: 10-21 every day.
        "KY": _rule(_h(10, 21), same_all_week=True),
        # Louisiana: 08-20, never on Sundays or state holidays (which include Mardi Gras).
        "LA": _rule(_h(8, 20), saturday=_h(8, 20), sunday=None, no_state_holidays=True),
        # Maryland (Stop the Spam Calls Act): 08-20, the floor; listed as considered.
        "MD": _rule(_h(8, 20), same_all_week=True),
        # Massachusetts: 08-20, the floor; listed as considered.
        "MA": _rule(_h(8, 20), same_all_week=True),
        # Michigan: 09-21 every day.
        "MI": _rule(_h(9, 21), same_all_week=True),
        # Minnesota: 09-21 every day.
        "MN": _rule(_h(9, 21), same_all_week=True),
        # Mississippi: 08-20, never on Sundays. Summaries disagree on its legal holidays, so
        # they are kept free of texts too.
        "MS": _rule(_h(8, 20), saturday=_h(8, 20), sunday=None, no_state_holidays=True),
        # Nevada: 09-20 every day.
        "NV": _rule(_h(9, 20), same_all_week=True),
        # New Mexico: 09-21 every day.
        "NM": _rule(_h(9, 21), same_all_week=True),
        # Oklahoma (OTSA): 08-20, the floor; listed as considered.
        "OK": _rule(_h(8, 20), same_all_week=True),
        # Pennsylvania: 08-21, Sundays only from 13:30, and not on legal holidays.
        "PA": _rule(_h(8, 21), saturday=_h(8, 21), sunday=_h(13, 21, 30), no_state_holidays=True),
        # Rhode Island: weekdays 09-18, Saturdays 10-17, never on Sundays or holidays.
        "RI": _rule(_h(9, 18), saturday=_h(10, 17), sunday=None, no_state_holidays=True),
        # Texas (Bus. & Com. Code 301.051): 09-21 Monday to Saturday, Sundays 12-21.
        "TX": _rule(_h(9, 21), saturday=_h(9, 21), sunday=_h(12, 21)),
        # Utah: 08-21, never on Sundays or state holidays.
        "UT": _rule(_h(8, 21), saturday=_h(8, 21), sunday=None, no_state_holidays=True),
        # Washington: 08-20, the floor; listed as considered.
        "WA": _rule(_h(8, 20), same_all_week=True),
    }
)


# The names phonenumbers' English geocoder gives when it only knows the state of an area code.
STATE_CODES: Mapping[str, str] = MappingProxyType(
    {
        "Alabama": "AL",
        "Alaska": "AK",
        "Arizona": "AZ",
        "Arkansas": "AR",
        "California": "CA",
        "Colorado": "CO",
        "Connecticut": "CT",
        "Delaware": "DE",
        "District of Columbia": "DC",
        "Florida": "FL",
        "Georgia": "GA",
        "Hawaii": "HI",
        "Idaho": "ID",
        "Illinois": "IL",
        "Indiana": "IN",
        "Iowa": "IA",
        "Kansas": "KS",
        "Kentucky": "KY",
        "Louisiana": "LA",
        "Maine": "ME",
        "Maryland": "MD",
        "Massachusetts": "MA",
        "Michigan": "MI",
        "Minnesota": "MN",
        "Mississippi": "MS",
        "Missouri": "MO",
        "Montana": "MT",
        "Nebraska": "NE",
        "Nevada": "NV",
        "New Hampshire": "NH",
        "New Jersey": "NJ",
        "New Mexico": "NM",
        "New York": "NY",
        "North Carolina": "NC",
        "North Dakota": "ND",
        "Ohio": "OH",
        "Oklahoma": "OK",
        "Oregon": "OR",
        "Pennsylvania": "PA",
        "Rhode Island": "RI",
        "South Carolina": "SC",
        "South Dakota": "SD",
        "Tennessee": "TN",
        "Texas": "TX",
        "Utah": "UT",
        "Vermont": "VT",
        "Virginia": "VA",
        "Washington": "WA",
        # The geocoder disambiguates these two from each other.
        "Washington D.C.": "DC",
        "Washington State": "WA",
        "West Virginia": "WV",
        "Wisconsin": "WI",
        "Wyoming": "WY",
    }
)

US_STATE_CODES: frozenset[str] = frozenset(STATE_CODES.values())
