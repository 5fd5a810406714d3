# kdeploy's container image: the drift_schedule CronJob runs it in-cluster, and CI jobs can use
# it instead of installing the binary. Published as ghcr.io/kerberos-io/kdeploy:<version> by
# .github/workflows/release.yml (the repository is KDEPLOY_REPOSITORY in
# providers/api/src/images.rs).
#
#   docker build -t kdeploy .
#   docker run --rm kdeploy version --json
#
# Build arguments: KDEPLOY_BUILD_COMMIT (the git commit `kdeploy version` reports; the build
# context has no .git) and SOURCE_DATE_EPOCH (the build date it reports).
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- build: the release binary, then its man pages and shell completions from the same clap
# definitions as its parser.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ARG KDEPLOY_BUILD_COMMIT=""
ARG SOURCE_DATE_EPOCH=""
RUN KDEPLOY_BUILD_COMMIT="${KDEPLOY_BUILD_COMMIT}" SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH}" \
        cargo build --release --locked --bin kdeploy \
    && install -D -m 0755 target/release/kdeploy /out/usr/local/bin/kdeploy \
    && /out/usr/local/bin/kdeploy man --out-dir /out/usr/local/share/man/man1 \
    && install -d /out/usr/share/bash-completion/completions /out/usr/share/zsh/vendor-completions /out/usr/share/fish/vendor_completions.d \
    && /out/usr/local/bin/kdeploy completion bash > /out/usr/share/bash-completion/completions/kdeploy \
    && /out/usr/local/bin/kdeploy completion zsh > /out/usr/share/zsh/vendor-completions/_kdeploy \
    && /out/usr/local/bin/kdeploy completion fish > /out/usr/share/fish/vendor_completions.d/kdeploy.fish

# --- runtime: Debian slim (glibc, a shell for CI jobs), CA certificates for the cloud and
# Kubernetes APIs, and an unprivileged user with a fixed UID so that `runAsNonRoot` can check it.
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kdeploy \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/kdeploy kdeploy
COPY --from=build /out/ /
USER 10001:10001
WORKDIR /home/kdeploy
ENTRYPOINT ["/usr/local/bin/kdeploy"]
CMD ["--help"]
