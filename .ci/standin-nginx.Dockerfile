# A STAND-IN for the official `nginx:stable` image that docker/compose.yaml names, for machines
# that cannot pull it (CI here). Debian's nginx on the same Debian base as the proxy image;
# like the official image it includes /etc/nginx/conf.d/*.conf inside http {} and logs to
# stdout/stderr. .ci/image builds and tags it only when `docker pull nginx:stable` fails.
FROM python:3.11-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
LABEL org.opencontainers.image.description="stand-in for nginx:stable built by .ci/image (Debian nginx-light), not the official image"
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
