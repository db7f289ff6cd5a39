"""Cron schedules as a CronJob reads them: checked, said in words, and their next times.

Kubernetes parses a CronJob's ``spec.schedule`` with robfig/cron's standard parser: five fields
(minute, hour, day of month, month, day of week) or a descriptor. :func:`parse` accepts what that
parser accepts, the same way, with two exceptions that keep a schedule plain: no ``@every``
(a duration counted from the controller's start, not a time of day), and ``?`` only in the two
day fields. What it refuses is said in one line, naming the field.

A field is a comma-separated list of ``*`` (``?``), ``N``, ``N-M``, each with an optional
``/STEP`` (``N/STEP`` runs from N to the field's end); months and days of the week may be named
(``JAN``-``DEC``, ``SUN``-``SAT``, any case). Days of the week run 0 (Sunday) to 6. When both day
fields are restricted a day matches either one (cron's rule); when one of them starts with ``*``
it must match both.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FORMS = ("five fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *': daily at 03:00) "
         "or one of @hourly, @daily, @weekly, @monthly, @yearly")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names of the values from ``low`` on (months from 1, days from 0)
    question_mark: bool = False  # ``?`` means ``*`` here (the day fields)


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, question_mark=True),
    _Field("month", 1, 12, MONTH_NAMES),
    _Field("day of week", 0, 6, DAY_NAMES, question_mark=True),
)
_CHARS = re.compile(r"^[0-9A-Za-z*?,/-]+$")
_WORD = re.compile(r"^[0-9]+$|^[A-Za-z]+$")
UTC = "UTC"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the values each field allows."""

    text: str  # as given (whitespace made single spaces)
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # the day-of-month field starts with * (or ?): days must match both fields
    any_weekday: bool  # the same for the day-of-week field

    def day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_times(self, after: dt.datetime, zone: dt.tzinfo, count: int = 1, years: int = 8) -> list[dt.datetime]:
        """The next ``count`` times it fires after ``after`` (aware), in ``zone``, within ``years``.

        Times are wall-clock times in ``zone``; one that a change to summer time skips is left out,
        one that occurs twice is taken once, at its first occurrence."""
        out: list[dt.datetime] = []
        local = after.astimezone(zone)
        day = local.date()
        last = day + dt.timedelta(days=366 * years)
        while day <= last and len(out) < count:
            if day.month in self.months and self.day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                        when = wall.replace(tzinfo=zone)
                        if when.astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None) != wall:
                            continue  # skipped by a change of the clocks
                        if when > after and (not out or when > out[-1]):
                            out.append(when)
                            if len(out) == count:
                                return out
            day += dt.timedelta(days=1)
        return out

    def words(self, zone: str | None = None) -> str:
        """The schedule in words where it is a common one ("daily at 03:00 UTC"), else the
        expression as given ("at '5 4 1-7 * 1' (cron) UTC"); ``zone`` is the time zone's name."""
        tz = f" {zone or UTC}"
        fields = (DESCRIPTORS.get(self.text) or self.text).split()
        minute, hour, dom, month, dow = fields
        any_dom, any_dow = dom in ("*", "?"), dow in ("*", "?")
        every_day = any_dom and any_dow and month == "*"
        if minute.isdigit() and hour.isdigit():
            at = f"at {int(hour):02d}:{int(minute):02d}{tz}"
            if every_day:
                return f"daily {at}"
            days = self._weekday_words()
            if any_dom and month == "*" and days:
                return f"{'weekly on' if len(self.weekdays) == 1 else 'on'} {days} {at}"
            if dom.isdigit() and any_dow and month == "*":
                return f"monthly on day {int(dom)} {at}"
            if dom.isdigit() and any_dow and month.isdigit():
                return f"yearly on {int(dom)} {MONTHS[int(month) - 1]} {at}"
        step = re.fullmatch(r"\*/([0-9]+)", hour)
        if every_day and minute.isdigit() and (hour == "*" or step):
            n = int(step.group(1)) if step else 1
            return f"every hour at minute {int(minute)}" if n == 1 else f"every {n} hours from 00:{int(minute):02d}{tz}"
        step = re.fullmatch(r"\*/([0-9]+)", minute)
        if every_day and hour == "*" and step:
            return f"every {int(step.group(1))} minutes"
        return f"at '{self.text}' (cron){tz}"

    def _weekday_words(self) -> str | None:
        names = WEEKDAYS
        days = sorted(self.weekdays)
        if not days or len(days) == 7:
            return None
        if len(days) == 1:
            return names[days[0]]
        if days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
            return f"{names[days[0]]} to {names[days[-1]]}"
        return ", ".join(names[d] for d in days[:-1]) + f" and {names[days[-1]]}"


def _value(text: str, f: _Field) -> int:
    if text.isdigit():
        value = int(text)
    elif f.names and text.lower() in f.names:
        return f.names.index(text.lower()) + f.low
    elif text.isalpha():
        known = f", or {f.names[0].upper()}-{f.names[-1].upper()}" if f.names else ""
        raise ValueError(f"{f.name} field: {text!r} is not a value ({f.low}-{f.high}{known})")
    else:
        raise ValueError(f"{f.name} field: {text!r} is not a number")
    if not f.low <= value <= f.high:
        raise ValueError(f"{f.name} field: {value} is out of range ({f.low}-{f.high})")
    return value


def _field(text: str, f: _Field) -> tuple[frozenset[int], bool]:
    """The values ``text`` allows in field ``f``, and whether it starts with ``*`` (cron's star)."""
    if not _CHARS.match(text):
        raise ValueError(f"{f.name} field: {text!r} has characters a cron field does not take "
                         "(digits, names, '*', ',', '-', '/')")
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise ValueError(f"{f.name} field: {text!r} has an empty item between commas")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{f.name} field: the step in {part!r} is not a whole number of 1 or more")
            step = int(step_text)
        if span == "*" or (span == "?" and f.question_mark):
            low, high = f.low, f.high
            star = star or step == 1
        elif span == "?":
            raise ValueError(f"{f.name} field: '?' is only for the day fields; use '*'")
        else:
            first, dash, second = span.partition("-")
            if not _WORD.match(first) or (dash and not _WORD.match(second)):
                raise ValueError(f"{f.name} field: {part!r} is not a value, a range N-M or '*' (each with an optional /STEP)")
            low = _value(first, f)
            high = _value(second, f) if dash else (f.high if slash else low)
            if high < low:
                raise ValueError(f"{f.name} field: the range {span!r} ends before it starts")
        values.update(range(low, high + 1, step))
    return frozenset(values), star


def parse(text: str) -> Cron:
    """A schedule from its text; ValueError (one line) when a CronJob would not take it."""
    words = str(text).split()
    if not words:
        raise ValueError(f"the schedule is empty; give {FORMS}")
    if "TZ=" in text or "CRON_TZ=" in text:
        raise ValueError("a time zone does not go in the schedule; set application.execution.timezone")
    if words[0].startswith("@"):
        if len(words) != 1 or words[0] not in DESCRIPTORS:  # as Kubernetes reads them: lower case
            raise ValueError(f"{' '.join(words)!r} is not a schedule; give {FORMS}")
        spelled = DESCRIPTORS[words[0]].split()
        given = words[0]
    else:
        if len(words) != len(FIELDS):
            raise ValueError(f"{' '.join(words)!r} has {len(words)} field{'s' if len(words) != 1 else ''}; a schedule has {FORMS}")
        spelled, given = words, " ".join(words)
    parts = [_field(w, f) for w, f in zip(spelled, FIELDS)]
    return Cron(given, parts[0][0], parts[1][0], parts[2][0], parts[3][0], parts[4][0], parts[2][1], parts[4][1])


TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")


def zone(name: str | None) -> dt.tzinfo:
    """The time zone of a schedule (UTC when none is named)."""
    if not name or name in ("UTC", "Etc/UTC"):
        return dt.timezone.utc
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def check_zone(name: str) -> str:
    """An IANA time zone name as a CronJob's timeZone takes it; ValueError (one line) otherwise.

    Checked against this machine's time zone database when it has one (the API server checks
    against its own)."""
    if not TZ_RE.match(name) or name == "Local":
        raise ValueError(f"{name!r} is not an IANA time zone name such as Europe/Berlin or America/New_York")
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
        return name
    except Exception:  # noqa: BLE001 - not a zone here (or no database): the list below says which
        pass
    try:
        known = zoneinfo.available_timezones()
    except Exception:  # noqa: BLE001 - no database here: the API server checks the name
        known = set()
    if known and name not in known and name not in ("UTC", "Etc/UTC"):
        import difflib

        close = difflib.get_close_matches(name, sorted(known), n=1)
        raise ValueError(f"{name!r} is not a time zone in the IANA database" + (f"; did you mean {close[0]}?" if close else ""))
    return name
