# One image for every Xinbao process in docker-compose.yml: `xinbao api`, `xinbao sim`,
# `xinbao controller` (and `xinbao demo` for a quick look). Python 3.11, as the project needs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The packages and their metadata only: the dependencies are declared in pyproject.toml and
# installed at build time, never when a container starts.
COPY pyproject.toml README.md ./
COPY xinbao ./xinbao
COPY firmware_bridge ./firmware_bridge
COPY locker_controller ./locker_controller
COPY cloud_api ./cloud_api
COPY simulator ./simulator
RUN pip install --no-compile . \
    && xinbao --help >/dev/null

# Health probes, the .env generator and the controller's start script (docs/deploy.md).
COPY deploy ./deploy

# Never run as root. /var/lib/xinbao holds the controller's SQLite state and outbox (a named
# volume copies this ownership when it is first created); /run/xinbao its rendered config.
RUN useradd --system --uid 10001 --home-dir /var/lib/xinbao --shell /usr/sbin/nologin xinbao \
    && mkdir -p /var/lib/xinbao /run/xinbao \
    && chown xinbao:xinbao /var/lib/xinbao /run/xinbao \
    && chmod 0700 /var/lib/xinbao
USER xinbao

# API 8000, kiosk 8080, simulator bus 7000 and control panel 8700.
EXPOSE 8000 8080 7000 8700
CMD ["xinbao", "--help"]
