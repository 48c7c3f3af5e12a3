"""One Settings class, read from the environment and an optional .env file."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from skintriage.exceptions import ConfigurationError

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "placeholder", "demo-secret-not-for-production"}
DEMO_BOT_TOKEN = "123456:DEMO-local-bot-api-token"
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a webhook's secret_token

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks ("127.0.0.1, 10.0.0.0/8") as networks; ValueError if invalid."""
    networks = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not an IP address or network; use e.g. 127.0.0.1,172.16.0.0/12") from exc
    return tuple(networks)


SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models"


class Settings(BaseSettings):
    """Every URL, path, threshold and secret, with safe defaults for the embedded setup."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: str = Field("development", validation_alias="SKINTRIAGE_ENV")

    # Telegram. The base URLs point python-telegram-bot at a local or self-hosted Bot API server.
    telegram_bot_token: SecretStr = Field(SecretStr(DEMO_BOT_TOKEN), validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_api_base_url: str = Field("https://api.telegram.org/bot", validation_alias="TELEGRAM_API_BASE_URL")
    telegram_file_base_url: str = Field("https://api.telegram.org/file/bot", validation_alias="TELEGRAM_FILE_BASE_URL")

    # Storage and queues. Defaults need no server: SQLite, kombu's filesystem transport, local folders.
    data_dir: Path = Field(Path("data"), validation_alias="DATA_DIR")
    # The models shipped in the repository (cards + compact weights), so a fresh clone serves real models.
    model_dir: Path = Field(SHIPPED_MODEL_DIR, validation_alias="MODEL_DIR")
    database_url: str = Field("", validation_alias="DATABASE_URL")
    celery_broker_url: str = Field("filesystem://", validation_alias="CELERY_BROKER_URL")
    image_store: str = Field("local", validation_alias="IMAGE_STORE")  # local | s3
    s3_endpoint_url: str | None = Field(None, validation_alias="S3_ENDPOINT_URL")
    s3_bucket: str = Field("skintriage-images", validation_alias="S3_BUCKET")
    s3_access_key: SecretStr | None = Field(None, validation_alias="S3_ACCESS_KEY")
    s3_secret_key: SecretStr | None = Field(None, validation_alias="S3_SECRET_KEY")
    s3_region: str = Field("us-east-1", validation_alias="S3_REGION")

    # Bounded waits: a PostgreSQL or Redis that hangs (accepts the connection, then never answers) costs
    # seconds, like one that refuses. PostgreSQL only (SQLite has its own busy timeout): connecting gives up
    # after DB_CONNECT_TIMEOUT_S; the server cancels a statement after DB_STATEMENT_TIMEOUT_S (0 = never);
    # the client gives up a connection that has not answered for DB_ANSWER_TIMEOUT_S (a little longer, so a
    # live server's own cancel comes first); waiting for a free pooled connection ends after DB_POOL_TIMEOUT_S;
    # TCP keepalives find a dead peer of an idle connection. Migrations get no statement or answer limit.
    db_connect_timeout_s: int = Field(5, ge=2, validation_alias="DB_CONNECT_TIMEOUT_S")
    db_statement_timeout_s: float = Field(20.0, ge=0, validation_alias="DB_STATEMENT_TIMEOUT_S")
    db_answer_timeout_s: float = Field(25.0, gt=0, validation_alias="DB_ANSWER_TIMEOUT_S")
    db_pool_timeout_s: float = Field(10.0, gt=0, validation_alias="DB_POOL_TIMEOUT_S")
    db_keepalives_idle_s: int = Field(30, ge=1, validation_alias="DB_KEEPALIVES_IDLE_S")
    db_keepalives_interval_s: int = Field(10, ge=1, validation_alias="DB_KEEPALIVES_INTERVAL_S")
    db_keepalives_count: int = Field(3, ge=1, validation_alias="DB_KEEPALIVES_COUNT")
    # Redis (the Celery broker and the console's login counts): connecting gives up after
    # REDIS_CONNECT_TIMEOUT_S, a command without an answer after REDIS_SOCKET_TIMEOUT_S; idle connections are
    # checked (PING) when unused for REDIS_HEALTH_CHECK_INTERVAL_S and kept alive by TCP keepalives.
    redis_connect_timeout_s: float = Field(1.5, gt=0, validation_alias="REDIS_CONNECT_TIMEOUT_S")
    redis_socket_timeout_s: float = Field(5.0, gt=0, validation_alias="REDIS_SOCKET_TIMEOUT_S")
    redis_health_check_interval_s: int = Field(25, ge=0, validation_alias="REDIS_HEALTH_CHECK_INTERVAL_S")
    # Updates of one chat run one at a time; at most this many chats are handled at once.
    bot_concurrent_chats: int = Field(32, ge=1, validation_alias="BOT_CONCURRENT_CHATS")
    # Connections of the bot's pool for Bot API calls (acknowledgements, downloads). httpx checks every idle
    # pooled connection on each request (docs/load.md), so more than the calls really in flight costs CPU.
    bot_api_connections: int = Field(8, ge=1, validation_alias="BOT_API_CONNECTIONS")
    # How updates arrive: long polling (BOT_WEBHOOK_URL empty, the default) or Telegram POSTing them to the
    # bot's webhook server (python-telegram-bot's), which listens on BOT_WEBHOOK_LISTEN:BOT_WEBHOOK_PORT
    # behind a TLS reverse proxy that BOT_WEBHOOK_URL (https, the path included) reaches. Telegram sends
    # BOT_WEBHOOK_SECRET with every update and the bot refuses requests without it. docs/load.md compares both.
    bot_webhook_url: str = Field("", validation_alias="BOT_WEBHOOK_URL")
    bot_webhook_listen: str = Field("127.0.0.1", validation_alias="BOT_WEBHOOK_LISTEN")
    bot_webhook_port: int = Field(8443, ge=1, le=65535, validation_alias="BOT_WEBHOOK_PORT")
    bot_webhook_secret: SecretStr = Field(SecretStr(""), validation_alias="BOT_WEBHOOK_SECRET")
    bot_webhook_max_connections: int = Field(40, ge=1, le=100, validation_alias="BOT_WEBHOOK_MAX_CONNECTIONS")

    # Case handling.
    retention_days: int = Field(30, validation_alias="RETENTION_DAYS")
    # Images no case names (a photo whose case was never committed, a mask written after /delete, a
    # half-written file) are removed by the daily retention job once they are this old: long enough for
    # any photo or job still in flight to commit its row first.
    orphan_grace_hours: int = Field(6, ge=1, validation_alias="ORPHAN_GRACE_HOURS")
    max_attempts: int = Field(3, validation_alias="MAX_ATTEMPTS")
    stuck_after_s: int = Field(300, validation_alias="STUCK_AFTER_S")
    sweep_interval_s: int = Field(60, validation_alias="SWEEP_INTERVAL_S")
    duplicate_window_s: int = Field(120, validation_alias="DUPLICATE_WINDOW_S")
    rate_limit_photos: int = Field(10, validation_alias="RATE_LIMIT_PHOTOS")
    rate_limit_window_s: int = Field(3600, validation_alias="RATE_LIMIT_WINDOW_S")
    max_in_flight: int = Field(3, validation_alias="MAX_IN_FLIGHT")
    max_file_bytes: int = Field(20 * 1024 * 1024, validation_alias="MAX_FILE_BYTES")
    max_image_pixels: int = Field(40_000_000, validation_alias="MAX_IMAGE_PIXELS")

    # Worker health (worker.health). Infrastructure failures (the models failing on this worker, not the photo)
    # in a row before the worker stops taking triage jobs; 0 never stops.
    worker_max_infra_failures: int = Field(3, ge=0, validation_alias="WORKER_MAX_INFRA_FAILURES")
    # Infrastructure failures on one case, on whichever workers, before it fails and the patient is told (a photo
    # that crashes the models everywhere, or workers that stay broken); 0 never. Keep it above
    # WORKER_MAX_INFRA_FAILURES, so that one broken worker alone turns unhealthy before it can end a case.
    max_case_infra_failures: int = Field(6, ge=0, validation_alias="MAX_CASE_INFRA_FAILURES")
    # A triage job running longer than this is hung: the worker turns unhealthy and the case goes to another
    # worker. Keep it well above the slowest photo's analysis and below STUCK_AFTER_S; 0 turns the watchdog off.
    job_deadline_s: int = Field(180, ge=0, validation_alias="JOB_DEADLINE_S")
    # One bot and one beat per database: each holds a lease renewed every third of this; a second one refuses to
    # start, and takes over at most this long after the first one died without releasing it.
    lease_ttl_s: int = Field(30, ge=3, validation_alias="LEASE_TTL_S")

    # Tier policy: a melanoma probability within this margin of the operating threshold is UNCERTAIN.
    uncertain_margin: float = Field(0.05, validation_alias="UNCERTAIN_MARGIN")
    min_confidence: float = Field(0.5, validation_alias="MIN_CONFIDENCE")
    guidance_file: Path | None = Field(None, validation_alias="GUIDANCE_FILE")
    # Grad-CAM heatmap per case for the operator console (one extra pass of the classifier per photo).
    gradcam: bool = Field(True, validation_alias="GRADCAM")

    # Who runs the service, named in the consent text (a name and a contact). Changing it changes the consent
    # text, so every patient is asked to agree again.
    service_operator: str = Field("the skin-triage demo (not a medical service)", validation_alias="SERVICE_OPERATOR")

    # Demo: replies from demo models say plainly they are not for medical use.
    allow_demo_models: bool = Field(False, validation_alias="ALLOW_DEMO_MODELS")

    # Console.
    console_secret_key: SecretStr = Field(
        SecretStr("demo-secret-not-for-production"), validation_alias="CONSOLE_SECRET_KEY"
    )
    console_host: str = Field("127.0.0.1", validation_alias="CONSOLE_HOST")
    console_port: int = Field(8000, validation_alias="CONSOLE_PORT")
    console_secure_cookies: bool = Field(False, validation_alias="CONSOLE_SECURE_COOKIES")
    # Failed logins are counted per (client address, username): this many within the window blocks that pair.
    console_login_max_failures: int = Field(5, ge=1, validation_alias="CONSOLE_LOGIN_MAX_FAILURES")
    console_login_window_s: int = Field(900, ge=1, validation_alias="CONSOLE_LOGIN_WINDOW_S")
    # Where those counts live (a `limits` storage URL); empty: the broker's Redis, else process memory.
    console_limits_storage_url: str = Field("", validation_alias="CONSOLE_LIMITS_STORAGE_URL")
    # Direct peers (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the client.
    console_trusted_proxies: str = Field("127.0.0.1,::1", validation_alias="CONSOLE_TRUSTED_PROXIES")
    console_session_max_age_s: int = Field(12 * 3600, validation_alias="CONSOLE_SESSION_MAX_AGE_S")
    console_session_idle_s: int = Field(30 * 60, ge=1, validation_alias="CONSOLE_SESSION_IDLE_S")
    # Opening a case to review it claims it for this long, so two reviewers do not review the same case.
    console_review_claim_s: int = Field(600, ge=1, validation_alias="CONSOLE_REVIEW_CLAIM_S")

    # Clinicians' follow-up. REVIEW_PROMISE_HOURS: HIGH and UNCERTAIN answers promise that a clinician of the
    # service looks at the photo within this many hours; unset (the default) promises nothing, for a
    # deployment without clinicians on duty. BOOKING_QUESTION_DAYS after a HIGH answer the bot asks whether the
    # patient booked a dermatologist (0 = never ask). After a LOW or MEDIUM answer the bot offers a re-check
    # reminder every RECHECK_REMINDER_MONTHS (0 = never offered); the periodic jobs send the due ones.
    review_promise_hours: int | None = Field(None, ge=1, validation_alias="REVIEW_PROMISE_HOURS")
    booking_question_days: float = Field(3.0, ge=0, validation_alias="BOOKING_QUESTION_DAYS")
    recheck_reminder_months: int = Field(3, ge=0, le=24, validation_alias="RECHECK_REMINDER_MONTHS")

    # Observability.
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(True, validation_alias="LOG_JSON")
    metrics_port: int = Field(0, validation_alias="METRICS_PORT")  # 0 = off
    health_port: int = Field(0, validation_alias="HEALTH_PORT")  # 0 = off

    @field_validator("review_promise_hours", mode="before")
    @classmethod
    def _empty_is_no_promise(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _answer_outlasts_statement(self) -> Settings:
        if self.db_statement_timeout_s and self.db_answer_timeout_s <= self.db_statement_timeout_s:
            raise ValueError(
                f"DB_ANSWER_TIMEOUT_S ({self.db_answer_timeout_s:g}) must be longer than DB_STATEMENT_TIMEOUT_S "
                f"({self.db_statement_timeout_s:g}) so a live server cancels a slow statement itself; "
                f"e.g. DB_ANSWER_TIMEOUT_S={self.db_statement_timeout_s + 5:g}"
            )
        return self

    @model_validator(mode="after")
    def _webhook_has_a_secret(self) -> Settings:
        if not self.bot_webhook_url:
            return self
        if not self.bot_webhook_url.startswith(("https://", "http://")):
            raise ValueError(
                "BOT_WEBHOOK_URL must be an https:// URL (Telegram posts only there), e.g. "
                "https://bot.example.org/telegram"
            )
        secret = self.bot_webhook_secret.get_secret_value()
        if not WEBHOOK_SECRET.fullmatch(secret) or secret in PLACEHOLDER_SECRETS:
            raise ValueError(
                "BOT_WEBHOOK_URL needs BOT_WEBHOOK_SECRET: 1-256 characters of A-Z, a-z, 0-9, _ and -, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return self

    @property
    def bot_webhook_path(self) -> str:
        """The path of BOT_WEBHOOK_URL, where the webhook server takes updates (without the leading slash)."""
        return urlsplit(self.bot_webhook_url).path.lstrip("/")

    @field_validator("console_trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        """CONSOLE_TRUSTED_PROXIES as networks."""
        return parse_networks(self.console_trusted_proxies)

    @property
    def redis_client_options(self) -> dict[str, float | bool]:
        """redis-py client options that bound every wait on Redis (for clients other than Celery's)."""
        return {
            "socket_connect_timeout": self.redis_connect_timeout_s,
            "socket_timeout": self.redis_socket_timeout_s,
            "socket_keepalive": True,
            "health_check_interval": self.redis_health_check_interval_s,
        }

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file under DATA_DIR."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'skintriage.sqlite').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        """CELERY_BROKER_URL; the filesystem transport keeps its folders under DATA_DIR."""
        return self.celery_broker_url

    @property
    def broker_folder(self) -> Path:
        """Folder of kombu's filesystem transport."""
        return (self.data_dir / "broker").resolve()

    @property
    def is_demo(self) -> bool:
        """True for the embedded demo and development setups."""
        return self.environment in {"development", "demo", "test"}

    def check_secrets(self) -> None:
        """Refuse to start with a placeholder secret outside development and the demo."""
        if self.is_demo:
            return
        token = self.telegram_bot_token.get_secret_value()
        if token in PLACEHOLDER_SECRETS or token == DEMO_BOT_TOKEN:
            raise ConfigurationError(
                "TELEGRAM_BOT_TOKEN is a placeholder; set the token BotFather gave you "
                "(or SKINTRIAGE_ENV=development for local work)"
            )
        if self.console_secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ConfigurationError(
                "CONSOLE_SECRET_KEY is a placeholder; set a long random value, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings (tests call get_settings.cache_clear() after changing the environment)."""
    return Settings()
