# One image holds both binaries: the manager (default entrypoint) and the
# node agent (/agent), which the manager's DaemonSets run.
# Build: make docker-build IMG=... (or docker buildx for linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY agent/ agent/
COPY internal/ internal/
# The same flags as `make build`.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -o /out/agent ./cmd/agent

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/manager /manager
COPY --from=build /out/agent /agent
USER 65532:65532
ENTRYPOINT ["/manager"]
