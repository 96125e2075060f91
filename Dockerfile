# syntax=docker/dockerfile:1
# The flowwarden image. deploy/ runs the default target (ghcr.io/flowwarden/flowwarden:<VERSION>),
# which talks to an external ClickHouse (--clickhouse / FLOWWARDEN_CLICKHOUSE).
# The "embedded" target adds libchdb.so (~570 MB) for the embedded ClickHouse:
#
#   docker build -t ghcr.io/flowwarden/flowwarden:$(cat VERSION) .
#   docker build --target embedded -t ghcr.io/flowwarden/flowwarden:$(cat VERSION)-embedded .
#
# The build stage runs `make release` (the Makefile holds the one release
# command; TestDockerfileBuildStage runs this stage's RUN line). Commit and
# date come from the .git in the context, or from --build-arg COMMIT=… DATE=….

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG OUT=/out
ARG VERSION
ARG COMMIT
ARG DATE
RUN make release BIN="$OUT/flowwarden" ${VERSION:+VERSION="$VERSION"} ${COMMIT:+COMMIT="$COMMIT"} ${DATE:+DATE="$DATE"}

# libchdb.so, fetched the way `make deps` does (npm pack of @chdb/lib-linux-x64-gnu).
FROM node:22-bookworm-slim AS chdb
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile .
RUN make deps

# glibc (the binary is built with the toolchain's default cgo setting, as
# CI builds it) and libstdc++; runs as the distroless "nonroot" user 65532,
# the UID deploy/deployment.yaml names.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/flowwarden /usr/bin/flowwarden
COPY LICENSE /usr/share/doc/flowwarden/LICENSE
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/bin/flowwarden"]
CMD ["serve"]

FROM runtime AS embedded
COPY --from=chdb /src/.deps/libchdb.so /usr/lib/flowwarden/libchdb.so
ENV CHDB_LIB_PATH=/usr/lib/flowwarden/libchdb.so

# The default target: external ClickHouse only.
FROM runtime AS external
