# The controller image that `fleet install` deploys (ghcr.io/fleet-mlops/fleet:<version>).
# Not built in this repository's CI: the development machines have no Docker engine.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleet ./fleet
RUN pip install --no-cache-dir . \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin fleet
USER 65532
ENTRYPOINT ["fleet"]
CMD ["controller", "--metrics-address", "0.0.0.0:8080", "--health-address", "0.0.0.0:8081"]
