# zipperfs on Debian 12. Build:   docker build -t zipperfs .
# Run (FUSE needs the device and the capability to mount):
#   docker run --rm -it --device /dev/fuse --cap-add SYS_ADMIN \
#     --security-opt apparmor:unconfined zipperfs gs://BUCKET /mnt/bucket -o auth=metadata
FROM debian:bookworm-slim AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config libfuse3-dev libcurl4-openssl-dev \
      libjson-c-dev libexpat1-dev libssl-dev zlib1g-dev libdeflate-dev protobuf-c-compiler libprotobuf-c-dev \
      ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup /build --buildtype=release -Dwerror=true && ninja -C /build \
    && install -D -m 0755 /build/zipperfs /out/usr/local/bin/zipperfs

FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      fuse3 libfuse3-3 libcurl4 libjson-c5 libexpat1 libssl3 zlib1g libdeflate0 libprotobuf-c1 \
      ca-certificates \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /mnt/bucket
COPY --from=build /out/ /
# foreground, so the container lives as long as the mount
ENTRYPOINT ["zipperfs", "-f"]
CMD ["--help"]
