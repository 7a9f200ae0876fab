# The service as the Procfile runs it: `web` by default; `worker` and `release` are commands of
# the same image (compose.yaml runs all three). Build: docker build -t jobhooks .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# The lock, exactly as pinned and without resolving anything (what Heroku installs), in a layer
# of its own so that a change to the code alone reuses it. Its `-e .` line is the project,
# installed from the copied source below.
COPY requirements.txt ./
RUN grep -v '^-e ' requirements.txt > /tmp/lock.txt \
    && pip install --no-deps -r /tmp/lock.txt \
    && rm /tmp/lock.txt

COPY . .
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 jobhooks \
    && mkdir -p instance && chown jobhooks instance

# Never root: the processes only read the code and write instance/ (a SQLite file, if used).
USER jobhooks

# config/gunicorn.py binds $PORT (set it to serve elsewhere).
EXPOSE 8000
CMD ["gunicorn", "wsgi:app", "-c", "config/gunicorn.py"]
