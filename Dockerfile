# fastify-tus as a standalone tus server: the CLI, run as the non-root user `node`, uploads in the /data volume.
# Every CLI flag is also an environment variable (FASTIFY_TUS_<FLAG>), and flags given to `docker run` are added:
#   docker build -t fastify-tus .
#   docker run -p 1080:1080 -v uploads:/data fastify-tus
#   docker run -p 1080:1080 -v uploads:/data -e FASTIFY_TUS_MAX_SIZE=10G fastify-tus --cors-origin https://app.example.com
# test/dockerfile.test.ts runs this image's command line with Node (no Docker needed).

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json README.md CHANGELOG.md LICENSE ./
COPY scripts/build.mjs scripts/build.mjs
COPY lib lib
RUN npm run build && npm pack --ignore-scripts --pack-destination /tmp
# The optional peers the scale-out flags load (--s3-bucket, --redis-url), at the versions the tests ran against: a
# global install installs no optional peer, and the CLI finds them only beside itself.
RUN node -e "const locked = require('./package-lock.json').packages; console.log(['@aws-sdk/client-s3', 'ioredis'].map((name) => name + '@' + locked['node_modules/' + name].version).join(' '))" > /tmp/scale-peers

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FASTIFY_TUS_DIR=/data \
    FASTIFY_TUS_HOST=0.0.0.0 \
    FASTIFY_TUS_PORT=1080 \
    FASTIFY_TUS_HEALTH_PATH=/healthz \
    FASTIFY_TUS_HEALTH_FILE=/tmp/fastify-tus-health
COPY --from=build /tmp/fastify-tus-*.tgz /tmp/scale-peers /tmp/
# A global install of the packed package: its dependencies, its peer fastify and the scale-out peers, nothing of the build.
RUN npm install --global --no-audit --no-fund /tmp/fastify-tus-*.tgz $(cat /tmp/scale-peers) \
 && rm /tmp/fastify-tus-*.tgz /tmp/scale-peers && npm cache clean --force \
 && mkdir /data && chown node:node /data
USER node
WORKDIR /data
VOLUME /data
EXPOSE 1080
# The health route's URL as the server bound it (flags after the image name, such as --port, win over the ENV
# above and the health check sees only the ENV): the server writes it to FASTIFY_TUS_HEALTH_FILE once listening.
HEALTHCHECK CMD ["node", "-e", "require('node:fs/promises').readFile(process.env.FASTIFY_TUS_HEALTH_FILE, 'utf8').then(fetch).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) closes the server gracefully: every byte received is kept.
ENTRYPOINT ["fastify-tus"]
