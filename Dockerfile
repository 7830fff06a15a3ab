# syntax=docker/dockerfile:1
#
# Keystone gateway: a static binary on a distroless base, running as non-root.
#
#   docker build -t keystone .
#   docker run -p 8080:8080 keystone                      # embedded default config
#   docker run -p 8080:8080 -v $PWD/configs:/etc/keystone \
#     -e KEYSTONE_CONFIG=/etc/keystone/production.yaml keystone
#
# The build stage's `go build` line is exercised by cmd/keystone's tests
# (TestDockerBuildProducesAStaticBinary), since CI has no Docker engine: they
# run it in a copy of the build context, the repository less .dockerignore.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keystone ./cmd/keystone

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keystone /usr/local/bin/keystone
COPY configs/ /etc/keystone/
USER nonroot:nonroot
EXPOSE 8080
# No curl in the image: the binary probes the gateway's own /admin/health,
# reading the same KEYSTONE_CONFIG the gateway runs with for the address,
# admin prefix and admin.token. It fails when the config disables admin
# (docs/operations.md, "Health check").
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/keystone", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/keystone"]
CMD ["run"]
