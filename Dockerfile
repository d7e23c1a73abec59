# The controller image that `fleet install` deploys (ghcr.io/fleet-mlops/fleet:<version>).
# Not built in this repository's CI: the development machines have no Docker engine.

# helm renders `kind: helm` add-ons; built from its Go module at the version hack/ pins.
FROM golang:1.26 AS helm
COPY hack/tools/helm /src
WORKDIR /src
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/helm helm.sh/helm/v3/cmd/helm

FROM python:3.11-slim
WORKDIR /app
COPY --from=helm /out/helm /usr/local/bin/helm
COPY pyproject.toml README.md ./
COPY fleet ./fleet
# The built-in cluster blueprints of `fleet render|apply` (a wheel does not carry them).
COPY blueprints ./blueprints
ENV FLEET_BLUEPRINTS=/app/blueprints
RUN pip install --no-cache-dir . \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin fleet
USER 65532
ENTRYPOINT ["fleet"]
CMD ["controller", "--metrics-address", "0.0.0.0:8080", "--health-address", "0.0.0.0:8081"]
