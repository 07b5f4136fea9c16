"""The runtime's configuration: every setting an operator may choose, where each came
from, and the checks that refuse a bad one.

Every Corral process (the CLI, a worker, ``corral dev``, the server to come) loads
one :class:`RuntimeConfig` with :meth:`RuntimeConfig.load` and builds its runtime
from it in one place (:mod:`corral.runtime.services`). A setting is, in order of
precedence:

1. a command-line option, where one exists (``--db`` for ``database_url``);
2. its environment variable, ``CORRAL_<SECTION>_<KEY>`` (``CORRAL_LIMITS_TIMEOUT_S``;
   ``CORRAL_DATABASE_URL`` for the top-level ``database_url``), unless set empty;
3. its key in the TOML file named by ``--config PATH``, else ``CORRAL_CONFIG``
   (``[limits] timeout_s = 120``);
4. its default.

The names are SPEC §2's. A typo is an error, not a setting silently ignored: a key
or section the file does not know, a ``CORRAL_<SECTION>_…`` variable that names no
key. Every error is one :class:`ConfigError` whose message names the variable, or
the file and key, the value, and what is expected (docs/configuration.md).

A few tunings are set in code only (``fetch``, ``lease_grace_s``, ``reconnect``):
SPEC §2 names no key for them, and tests and benchmarks set them.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from corral.db.engine import DEFAULT_URL
from corral.errors import ConfigError
from corral.quotas import MAX_QUOTA, GiB, KiB, MiB, Quotas
from corral.runtime.network.fetch import FetchConfig
from corral.sandbox.limits import CEILINGS, RANGES, Limits
from corral.tasks.queue import Backoff

#: Names the TOML file when ``--config`` does not.
CONFIG_ENV = "CORRAL_CONFIG"
#: The source of a value nobody set.
DEFAULT = "default"
#: With the longest timeout a ``Limits`` allows, a lease stays far inside an int64 of ms.
MAX_LEASE_GRACE_S = 3600


# -- the sections ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """At most ``executions`` per rolling ``window_s`` per instance."""

    executions: int
    window_s: int
    name: str


@dataclass(frozen=True)
class RateLimits:
    """Executions per instance before it is auto-suspended (SPEC §1.6)."""

    per_5min: int = 200
    per_24h: int = 500

    @property
    def windows(self) -> tuple[RateLimit, RateLimit]:
        return (
            RateLimit(self.per_5min, 5 * 60, "5 minutes"),
            RateLimit(self.per_24h, 24 * 3600, "24 hours"),
        )


@dataclass(frozen=True)
class Retries:
    """How often a failed task runs, and how long it waits between attempts."""

    #: Runs of a task in all, the first included, before it is dead-lettered.
    attempts: int = 3
    #: Doubles from ``backoff_s`` each attempt, at most 5 minutes, ±20 %.
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def backoff_s(self) -> float:
        """The wait before the first retry: the ``[retries] backoff_s`` setting."""
        return self.backoff.base_ms / 1000


@dataclass(frozen=True)
class WebhookSettings:
    """Webhook intake (SPEC §1.3); read by the server, which is not built yet."""

    #: The largest body any webhook accepts (a webhook's own cap may be lower).
    max_body_bytes: int = 1 * MiB
    #: How long a sync webhook's handler may run (never past its execution's timeout).
    sync_deadline_s: float = 10.0
    #: A delivery id seen again within this many hours is a duplicate.
    dedupe_window_h: float = 72.0
    #: The headers a sender's delivery id is read from, the first present; by commas.
    dedupe_headers: str = "webhook-id, svix-id, X-GitHub-Delivery, Idempotency-Key"

    @property
    def dedupe_header_names(self) -> tuple[str, ...]:
        """``dedupe_headers``, one name each."""
        return _header_names(self.dedupe_headers)


@dataclass(frozen=True)
class ServerSettings:
    """Where ``corral serve`` listens, and the URL webhooks are given out under."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: The base of webhook URLs (``{public_url}/hooks/<token>``); None: ``effective_public_url``.
    public_url: str | None = None

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Retention:
    """How long history is kept: deliveries are purged by the workers' housekeeping; the
    cleanup of executions and logs is not built yet."""

    executions_days: int = 30
    logs_days: int = 30
    deliveries_days: int = 30


# -- what each key accepts ---------------------------------------------------------------

_AMOUNT = re.compile(r"\s*(\d+(?:_\d+)*)\s*([kmg]ib)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "kib": KiB, "mib": MiB, "gib": GiB}


def _figure(value: float) -> str:
    """A bound as a message shows it: 86,400 and 0.001, never 86400.0."""
    return f"{int(value):,}" if value == int(value) else str(value)


@dataclass(frozen=True)
class _Number:
    """A key that takes a number: a TOML number, or a variable's text that reads as one."""

    #: What it is, as a message says it: "a whole number of MiB".
    kind: str
    low: float
    high: float
    whole: bool
    #: Whether a KiB, MiB or GiB suffix may follow (a variable's text, or a TOML string).
    sized: bool = False

    @property
    def expected(self) -> str:
        units = ", or of KiB, MiB or GiB (such as 64MiB)," if self.sized else ""
        return f"{self.kind}{units} from {_figure(self.low)} to {_figure(self.high)}"

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (isinstance(value, int) or not self.whole)
            and self.low <= value <= self.high  # False for nan
        )

    def read(self, raw: object, *, typed: bool) -> object:
        """``raw`` as a number, or ``raw`` itself when it reads as none (``accepts`` says
        no). ``typed``: from TOML, where a number is written as one, and a string only
        reads as a number with a unit (``"64MiB"``)."""
        if isinstance(raw, int) and not isinstance(raw, bool) and not self.whole:
            return float(raw)  # seconds = 10 in a file: 10.0, as a variable's "10" reads
        if not isinstance(raw, str) or (typed and not self.sized):
            return raw
        if self.whole:
            match = _AMOUNT.fullmatch(raw)
            if match is None or (match[2] and not self.sized):
                return raw
            return int(match[1]) * _UNITS[(match[2] or "").lower()]
        try:
            number = float(raw.replace("_", ""))
        except ValueError:
            return raw
        return number if math.isfinite(number) else raw


@dataclass(frozen=True)
class _Text:
    """A key that takes a string, checked by ``valid``."""

    expected: str
    valid: Callable[[str], bool]

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and self.valid(value)

    def read(self, raw: object, *, typed: bool) -> object:
        return raw.strip() if isinstance(raw, str) else raw


def without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it is ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _header_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(","))


#: What an HTTP header's name may hold (RFC 9110's token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _are_header_names(text: str) -> bool:
    return all(_HEADER_NAME.fullmatch(name) for name in _header_names(text))


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


_Kind = _Number | _Text


@dataclass(frozen=True)
class _Key:
    """One setting: its TOML section ("" at the top level) and key, and what it takes."""

    section: str
    name: str
    kind: _Kind
    #: The value in effect as it may be shown (the database URL's password as ``***``),
    #: read off the section's object; by default its attribute ``name``.
    effective: Callable[[Any], object] | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def variable(self) -> str:
        return "CORRAL_" + self.dotted.replace(".", "_").upper()

    def value(self, config: RuntimeConfig) -> object:
        holder = getattr(config, self.section) if self.section else config
        return self.effective(holder) if self.effective else getattr(holder, self.name)


def _limit_keys(section: str) -> list[_Key]:
    return [
        _Key(section, name, _Number(rule.kind, rule.floor, rule.most, whole=rule.whole))
        for name, rule in RANGES.items()
    ]


_COUNT = _Number("a whole number", 1, 10**9, whole=True)
_QUOTA = _Number("a whole number", 1, MAX_QUOTA, whole=True)
_DAYS = _Number("a whole number of days", 1, 36_500, whole=True)
_BYTES_QUOTA = _Number("a whole number of bytes", 1, MAX_QUOTA, whole=True, sized=True)
_BODY_BYTES = _Number("a whole number of bytes", 1, GiB, whole=True, sized=True)

#: Every setting, in the order ``corral config`` and docs/configuration.md list them.
KEYS: tuple[_Key, ...] = (
    _Key(
        "",
        "database_url",
        _Text("a database URL (sqlite:///path or postgresql://…)", bool),
        effective=lambda config: without_password(config.database_url),
    ),
    *_limit_keys("limits"),
    *_limit_keys("ceilings"),
    _Key("rate_limits", "per_5min", _COUNT),
    _Key("rate_limits", "per_24h", _COUNT),
    _Key("retries", "attempts", _Number("a whole number", 1, 1000, whole=True)),
    _Key("retries", "backoff_s", _Number("a number of seconds", 0, 300, whole=False)),
    _Key("quotas", "store_bytes", _BYTES_QUOTA),
    _Key("quotas", "store_keys", _QUOTA),
    _Key("quotas", "pending_tasks", _QUOTA),
    _Key("quotas", "callbacks", _QUOTA),
    _Key("quotas", "webhooks", _QUOTA),
    _Key("quotas", "activities", _QUOTA),
    _Key("webhooks", "max_body_bytes", _BODY_BYTES),
    _Key("webhooks", "sync_deadline_s", _Number("a number of seconds", 0.001, 86_400, whole=False)),
    _Key("webhooks", "dedupe_window_h", _Number("a number of hours", 0, 8_760, whole=False)),
    _Key(
        "webhooks", "dedupe_headers", _Text("header names separated by commas", _are_header_names)
    ),
    _Key("server", "host", _Text("a host name or IP address", lambda s: bool(s) and " " not in s)),
    _Key("server", "port", _Number("a whole number (0: any free port)", 0, 65_535, whole=True)),
    _Key(
        "server",
        "public_url",
        _Text("an http:// or https:// URL without a query", _is_http_url),
        effective=lambda server: server.effective_public_url,
    ),
    _Key("retention", "executions_days", _DAYS),
    _Key("retention", "logs_days", _DAYS),
    _Key("retention", "deliveries_days", _DAYS),
)

_SECTIONS = {key.section: [k for k in KEYS if k.section == key.section] for key in KEYS}


# -- the configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything a Corral process runs with. Build it with ``load`` from the operator's
    settings; in code (tests, benchmarks) by hand, checked all the same."""

    database_url: str = DEFAULT_URL
    #: Each execution's limits, unless its agent declares others.
    limits: Limits = field(default_factory=Limits)
    #: The most an agent may declare: deploy refuses more, and a worker dead-letters
    #: the tasks of a version stored before a ceiling was lowered.
    ceilings: Limits = CEILINGS
    rate_limits: RateLimits = field(default_factory=RateLimits)
    retries: Retries = field(default_factory=Retries)
    #: What each instance may keep: store bytes and keys, pending tasks, callbacks.
    quotas: Quotas = field(default_factory=Quotas)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    retention: Retention = field(default_factory=Retention)
    #: Outbound requests: rate limit per instance, timeout, response size (docs/fetch.md).
    fetch: FetchConfig = field(default_factory=FetchConfig)
    #: Added to an execution's timeout for its lease: time to record and settle it.
    lease_grace_s: float = 15.0
    #: Between a worker's attempts to reach its database during an outage.
    reconnect: Backoff = field(default_factory=lambda: Backoff(base_ms=100, cap_ms=2_000))
    #: Where each setting came from, by its dotted key ("limits.timeout_s"): a file's
    #: path, a variable's name or an option's; a key not here has its default.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: The TOML file read, if any.
    file: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in KEYS:
            value = key.value(self)
            if not key.kind.accepts(value):
                raise ConfigError(
                    f"{self._where(key)} must be {key.kind.expected}, got {_shown(value)}"
                )
        for name in RANGES:
            default, ceiling = getattr(self.limits, name), getattr(self.ceilings, name)
            if default > ceiling:
                raise ConfigError(
                    f"limits.{name} = {_figure(default)} ({self._origin('limits.' + name)}) "
                    f"is above its ceiling, ceilings.{name} = {_figure(ceiling)} "
                    f"({self._origin('ceilings.' + name)}): lower the default or raise the "
                    "ceiling"
                )
        if not 0 <= self.lease_grace_s <= MAX_LEASE_GRACE_S:  # and not nan
            raise ConfigError(
                f"lease_grace_s must be from 0 to {MAX_LEASE_GRACE_S} seconds, "
                f"got {self.lease_grace_s!r}"
            )

    def source(self, dotted: str) -> str:
        """Where the setting ``dotted`` came from: ``default``, a path, a variable, an option."""
        return self.sources.get(dotted, DEFAULT)

    def _origin(self, dotted: str) -> str:
        source = self.source(dotted)
        return "the default" if source == DEFAULT else f"from {source}"

    def _where(self, key: _Key) -> str:
        source = self.source(key.dotted)
        if source == DEFAULT:
            return key.dotted
        if source == self.file:
            return f"{_in_file(key)} in {source}"
        return source

    def settings(self) -> list[tuple[str, object, str]]:
        """Each setting's dotted key, value in effect (a password as ``***``) and source,
        in ``KEYS`` order: what ``corral config`` prints."""
        return [(key.dotted, key.value(self), self.source(key.dotted)) for key in KEYS]

    @classmethod
    def load(
        cls,
        *,
        config_file: str | Path | None = None,
        database_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RuntimeConfig:
        """The configuration from ``--db`` (``database_url``), the environment, the TOML
        file (``config_file``, from ``--config``; else ``CORRAL_CONFIG``) and the
        defaults, in that order of precedence; ``ConfigError`` for anything wrong."""
        env = os.environ if environ is None else environ
        chosen: dict[_Key, tuple[object, str]] = {}
        if config_file is not None:
            path = str(config_file)
            chosen.update(_read_file(path, "--config"))
        elif env.get(CONFIG_ENV, "").strip():
            path = env[CONFIG_ENV].strip()
            chosen.update(_read_file(path, CONFIG_ENV))
        else:
            path = None
        chosen.update(_read_environment(env))
        if database_url is not None:
            chosen[KEYS[0]] = (database_url, "--db")
        values: dict[_Key, object] = {}
        for key, (raw, source) in chosen.items():
            value = key.kind.read(raw, typed=source == path)
            if not key.kind.accepts(value):
                where = f"{_in_file(key)} in {source}" if source == path else source
                raise ConfigError(f"{where} must be {key.kind.expected}, got {_shown(raw)}")
            values[key] = value
        return _build(values, {key.dotted: source for key, (_, source) in chosen.items()}, path)


def _build(values: dict[_Key, object], sources: dict[str, str], path: str | None) -> RuntimeConfig:
    """The defaults with ``values`` (each already read and checked) instead."""

    def given(section: str) -> dict[str, Any]:
        return {key.name: value for key, value in values.items() if key.section == section}

    retries = given("retries")
    backoff_s = retries.get("backoff_s")
    return RuntimeConfig(
        database_url=given("").get("database_url", DEFAULT_URL),
        limits=replace(Limits(), **given("limits")),
        ceilings=replace(CEILINGS, **given("ceilings")),
        rate_limits=replace(RateLimits(), **given("rate_limits")),
        retries=Retries(
            attempts=retries.get("attempts", Retries.attempts),
            backoff=Backoff() if backoff_s is None else Backoff(base_ms=round(backoff_s * 1000)),
        ),
        quotas=replace(Quotas(), **given("quotas")),
        webhooks=replace(WebhookSettings(), **given("webhooks")),
        server=replace(ServerSettings(), **given("server")),
        retention=replace(Retention(), **given("retention")),
        sources=sources,
        file=path,
    )


def _in_file(key: _Key) -> str:
    return f"[{key.section}] {key.name}" if key.section else key.name


def _shown(value: object) -> str:
    """A value as a message quotes it: bounded, whatever its size."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_environment(env: Mapping[str, str]) -> dict[_Key, tuple[object, str]]:
    """The keys set by ``CORRAL_<SECTION>_<KEY>`` variables (empty ones are unset)."""
    by_variable = {key.variable: key for key in KEYS}
    found: dict[_Key, tuple[object, str]] = {}
    for variable, raw in env.items():
        key = by_variable.get(variable)
        if key is None:
            for section, keys in _SECTIONS.items():
                prefix = f"CORRAL_{section.upper()}_"
                if section and variable.startswith(prefix):
                    raise ConfigError(
                        f"{variable} names no setting: the [{section}] settings are "
                        f"{', '.join(k.variable for k in keys)}"
                    )
        elif raw.strip():
            found[key] = (raw, variable)
    return found


def _read_file(path: str, named_by: str) -> dict[_Key, tuple[object, str]]:
    """The keys the TOML file at ``path`` sets (``named_by``: the option or variable
    that named it, for the message when it cannot be read)."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{named_by} names {path}, which does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"{named_by} names {path}, which cannot be read: {exc.strerror or exc}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    top = {key.name: key for key in _SECTIONS[""]}
    found: dict[_Key, tuple[object, str]] = {}
    for name, content in document.items():
        if name in top:
            found[top[name]] = (content, path)
            continue
        keys = _SECTIONS.get(name) if name else None
        if keys is None:
            sections = ", ".join(f"[{section}]" for section in _SECTIONS if section)
            raise ConfigError(
                f"{path} has {name!r}, which is no setting: the sections are {sections}, "
                f"and the top-level key {', '.join(top)}"
            )
        if not isinstance(content, dict):
            raise ConfigError(
                f"{name} in {path} must be a section, [{name}], got {_shown(content)}"
            )
        by_name = {key.name: key for key in keys}
        for key_name, raw in content.items():
            if key_name not in by_name:
                raise ConfigError(
                    f"[{name}] in {path} has no key {key_name!r}: its keys are {', '.join(by_name)}"
                )
            found[by_name[key_name]] = (raw, path)
    return found
