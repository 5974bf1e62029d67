"""Database models (SQLAlchemy 2, typed). The schema itself lives in the Alembic migrations.

Conventions:
- `Trial.treatment_side` is where the treatment image was shown ('left' | 'right'); the raw answer
  `Rating.choice` is 1..5 as shown (1 left much better ... 5 right much better) and `Rating.score`
  is -2..+2, positive = treatment better (see `app.statistics.scoring`, the one place that un-flips).
- For gold trials the intact image plays "treatment" and its degraded twin "baseline", so a
  positive score means the participant passed the gold check.
- Nothing a participant receives names an arm: images are addressed by `Image.token` (random),
  trials by `Trial.public_id` (random).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, deferred, mapped_column, relationship
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use timezone-aware UTC datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


_mappers_configured = False


def with_values(cls: type, values: dict[str, Any]):
    """A new (transient) `cls` holding the column `values`, put in place as the ORM's own loading
    does: the constructor would run an attribute event per column, which on the participant path
    costs more than the statement that wrote the row."""
    global _mappers_configured
    if not _mappers_configured:  # the constructor would configure them; a first object may come before any query
        configure_mappers()
        _mappers_configured = True
    obj = cls._sa_class_manager.new_instance()
    instance_state(obj).dict.update(values)
    return obj


STUDY_STATES = ("draft", "open", "closed", "archived")
TRIAL_KINDS = ("practice", "main", "gold", "repeat")
TRIAL_STATES = ("assigned", "answered", "expired")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    instructions: Mapped[str] = mapped_column(Text, default="")
    question: Mapped[str] = mapped_column(Text)
    scale_labels: Mapped[list[Any]] = mapped_column(JSON)
    pairs_per_participant: Mapped[int] = mapped_column(Integer, default=20)
    ratings_per_pair: Mapped[int] = mapped_column(Integer, default=5)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    min_response_ms: Mapped[int] = mapped_column(Integer, default=0)
    practice_trials: Mapped[int] = mapped_column(Integer, default=0)
    hold_minutes: Mapped[float | None] = mapped_column(Float, nullable=True)
    completion_code: Mapped[str] = mapped_column(String(100))
    redirect_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    exclusion_rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Peeking-safe monitoring settings (app.analysis.monitoring_study): auto_close, look_every, margin.
    monitoring: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Close the study by itself once every main pair has ratings_per_pair ratings.
    auto_close: Mapped[bool] = mapped_column(default=False)
    # A participant whose study filled up before they answered every trial they were promised
    # ends "study full"; whether they still get the completion code (issue 22).
    code_when_full: Mapped[bool] = mapped_column(default=False)
    # The participant's view (issue 10): compare view on/off, how far images may be enlarged
    # past their natural size, what happens to answers faster than `min_response_ms`
    # ('block' | 'warn' | 'flag'), the too-fast share past which a participant gets the
    # "returned" page instead of the code (None: never), and the text shown on gold trials.
    compare_tools: Mapped[bool] = mapped_column(default=True)
    max_upscale: Mapped[float] = mapped_column(Float, default=4.0)
    fast_answers: Mapped[str] = mapped_column(String(8), default="warn")
    fast_share_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    returned_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    gold_instruction: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Several criteria per trial (issue 24; `app.studies.config.Question`): a list of
    # {key, text, low, high}, None = the one question above (criterion `overall`); `primary_criterion`:
    # the key monitoring, planning and the verdict use (None = the first question).
    questions: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    primary_criterion: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Datasheet details (issue 25; `app.studies.config.StudyAbout`): platform, pay, consent text, ...
    about: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    comparisons: Mapped[list[Comparison]] = relationship(
        back_populates="study", order_by="Comparison.id", cascade="all, delete-orphan"
    )


class StudyVersion(Base):
    """A snapshot of a study's config, one per version; ratings point at it by number."""

    __tablename__ = "study_versions"
    __table_args__ = (UniqueConstraint("study_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Why this version exists when a rule rather than a person made it (e.g. a monitoring stop).
    note: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PairSet(Base):
    """One imported generator manifest."""

    __tablename__ = "pair_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(Text, default="")
    manifest_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    baseline_arm: Mapped[str] = mapped_column(String(100))
    treatment_arm: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    image_byte_len: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)

    pairs: Mapped[list[Pair]] = relationship(back_populates="pair_set", order_by="Pair.id")


class Comparison(Base):
    """A pair set taking part in a study (baseline vs treatment as the pair set's arms say)."""

    __tablename__ = "comparisons"
    __table_args__ = (UniqueConstraint("study_id", "pair_set_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    pair_set_id: Mapped[int] = mapped_column(ForeignKey("pair_sets.id"))
    label: Mapped[str] = mapped_column(String(300))

    study: Mapped[Study] = relationship(back_populates="comparisons")
    pair_set: Mapped[PairSet] = relationship()


class Image(Base):
    """A blinded image: re-encoded PNG without metadata, padded to its pair set's byte length."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    byte_len: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class Pair(Base):
    __tablename__ = "pairs"
    __table_args__ = (UniqueConstraint("pair_set_id", "pair_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_set_id: Mapped[int] = mapped_column(ForeignKey("pair_sets.id"), index=True)
    pair_key: Mapped[str] = mapped_column(String(300))
    prompt_id: Mapped[str] = mapped_column(String(300))
    prompt: Mapped[str] = mapped_column(Text)
    stratum: Mapped[str | None] = mapped_column(String(100), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    baseline_image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    treatment_image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    gold_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    gold_degraded_arm: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Researcher-only SFG token map ({grid, legend}, see sampler.token_maps); never served to
    # participants.
    token_map: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    pair_set: Mapped[PairSet] = relationship(back_populates="pairs")
    baseline_image: Mapped[Image] = relationship(foreign_keys=[baseline_image_id])
    treatment_image: Mapped[Image] = relationship(foreign_keys=[treatment_image_id])
    gold_image: Mapped[Image | None] = relationship(foreign_keys=[gold_image_id])


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study_id", "external_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    external_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # 'PROLIFIC_PID:<id>' or 'workerId:<id>': lets a crowd worker on a new device resume.
    external_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The researcher's own decision, overriding the suggested one: {"decision": "APPROVE" |
    # "REJECT", "reason": str}; None = follow the suggestion (app.analysis.participant_review).
    review: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    study: Mapped[Study] = relationship()


class Trial(Base):
    __tablename__ = "trials"
    # One live trial per plan slot: a double-clicked "next" can never allocate a slot twice. An
    # expired trial frees its slot for a reissued one.
    __table_args__ = (
        Index(
            "uq_trials_live_slot",
            "participant_id",
            "position",
            unique=True,
            sqlite_where=text("state != 'expired'"),
            postgresql_where=text("state != 'expired'"),
        ),
        # Per-pair claims and counts in app.assignment, and a study's trials (its prefix). No index
        # of study_id alone: with one, a plan made while the table was small counted a pair's
        # trials by scanning the whole study's.
        Index("ix_trials_study_pair", "study_id", "pair_id"),
        Index("ix_trials_participant", "participant_id"),
        # The holds (few at any time, however many ratings there are): allocation ranks pairs by
        # their tally plus their live holds, found through this index.
        Index("ix_trials_holds", "study_id", "pair_id", sqlite_where=text("state = 'assigned'"),
              postgresql_where=text("state = 'assigned'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    treatment_side: Mapped[str] = mapped_column(String(8))
    repeat_of_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="assigned")
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    presented_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[datetime] = mapped_column()
    # Issued after its participant's first answer: counts toward the pair's target while held
    # (app.assignment.allocation.committed). False: a provisional hold of a new participant.
    reserved: Mapped[bool] = mapped_column(default=True, server_default=true())

    participant: Mapped[Participant] = relationship()
    pair: Mapped[Pair] = relationship()
    comparison: Mapped[Comparison] = relationship()
    # The primary criterion's rating (a trial of a several-question study has one row per criterion).
    rating: Mapped[Rating | None] = relationship(
        primaryjoin="and_(Trial.id == Rating.trial_id, Rating.is_primary)", uselist=False, viewonly=True
    )


class PairTally(Base):
    """How many main trials of a pair a study has answered: the same number as counting answered
    main trials (`tests/test_concurrency.py` checks it), kept so that allocation can rank pairs
    without counting every rating of the study on every request. Written only by
    `app.assignment.answers`, in the transaction that answers the trial."""

    __tablename__ = "pair_tallies"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), primary_key=True)
    answered: Mapped[int] = mapped_column(Integer, default=0)


# The Rating columns of how the participant compared (exported last; app.studies.comparing).
COMPARE_COLUMNS = ("used_zoom", "used_flicker", "max_zoom", "compare_view_ms", "flicker_ms", "unlock_ms")


class Rating(Base):
    """One answer to one criterion of a trial (issue 24: a trial of a study with several questions
    has one row per criterion, all written by one request in one transaction). `is_primary` marks
    the row of the study's primary criterion: counts of answered trials and the primary analysis
    read those rows only; a one-question study's rows are all primary (criterion `overall`)."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("trial_id", "criterion", name="uq_ratings_trial_criterion"),
        # One request per answer: its request id is unique among the primary rows (every answer has one).
        Index("uq_ratings_primary_request", "request_id", unique=True, sqlite_where=text("is_primary"),
              postgresql_where=text("is_primary")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(100))
    criterion: Mapped[str] = mapped_column(String(64), server_default="overall")
    is_primary: Mapped[bool] = mapped_column(server_default=true())
    study_version: Mapped[int] = mapped_column(Integer)
    choice: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer)
    treatment_side: Mapped[str] = mapped_column(String(8))
    response_ms: Mapped[int] = mapped_column(Integer)
    client_response_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    too_fast: Mapped[bool] = mapped_column(default=False)
    # How the participant compared (client-reported, None when not sent): see app.studies.comparing.
    used_zoom: Mapped[bool | None] = mapped_column(nullable=True)
    used_flicker: Mapped[bool | None] = mapped_column(nullable=True)
    max_zoom: Mapped[float | None] = mapped_column(Float, nullable=True)
    compare_view_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flicker_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unlock_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)

    trial: Mapped[Trial] = relationship()


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdminSession(Base):
    """A server-side admin login: the cookie carries only a random id, stored here as its SHA-256.
    Logging out, changing the password and `sfgeval admin revoke` delete rows (app.web.auth)."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class LoginFailure(Base):
    """One failed admin login, for the brute-force throttle (app.auth_throttle)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
