# One image holds both binaries: the manager (default entrypoint) and the
# node agent (/agent), which the manager's DaemonSets run.
# Build: make docker-build IMG=... (or docker buildx for linux/amd64,linux/arm64).
# make images builds the same image without Docker (hack/images); its test
# (TestDockerfileAgrees) holds the two to the same user, entrypoint, ports,
# labels and files.
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
LABEL org.opencontainers.image.title="coredog" \
      org.opencontainers.image.description="CoreDog captures core dumps on Kubernetes nodes: the manager (entrypoint) and the node agent (/agent)" \
      org.opencontainers.image.source="https://github.com/coredog/coredog" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/manager /manager
COPY --from=build /out/agent /agent
# 8081: health probes and 8443: metrics (manager and agent); 9443: the agent's
# dump endpoint (mTLS).
EXPOSE 8081/tcp 8443/tcp 9443/tcp
USER 65532:65532
ENTRYPOINT ["/manager"]
