# gohub: multi-stage Debian 12 build.
#   docker build -t gohub .
#   docker run -p 8080:8080 gohub
# Stage 1 compiles with Debian's -dev packages (llhttp's C sources come from
# node-llhttp, as in the Makefile); stage 2 carries only the runtime
# libraries, the binary, the default config and the Lua handlers.
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config libuv1-dev libwslay-dev node-llhttp libcjson-dev \
      libhiredis-dev libnats-dev libjwt-dev libssl-dev libluajit-5.1-dev libyaml-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY src ./src
RUN make VARIANT=release all && strip build/release/gohub

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libwslay1 libcjson1 libyaml-0-2 libluajit-5.1-2 libhiredis0.14 \
      libjwt0 libssl3 libnats3.4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin gohub
COPY --from=build /src/build/release/gohub /usr/local/bin/gohub
COPY configs/gohub.yaml /etc/gohub/gohub.yaml
COPY lua /usr/share/gohub/lua
# lua.path is relative to the working directory by default; point it at the
# installed handlers (a mounted volume can replace them, and the file watch
# reloads them live)
ENV GOHUB_LUA_PATH=/usr/share/gohub/lua
USER gohub
EXPOSE 8080
# the config is checked at build time too, so a broken default never ships,
# and the Lua API listing proves the LuaJIT runtime links and boots
RUN ["/usr/local/bin/gohub", "-t", "-c", "/etc/gohub/gohub.yaml"]
RUN ["/usr/local/bin/gohub", "--lua-api"]
ENTRYPOINT ["/usr/local/bin/gohub"]
CMD ["-c", "/etc/gohub/gohub.yaml"]
