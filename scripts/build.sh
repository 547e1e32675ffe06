#!/usr/bin/env bash
# Build the senso image for ECS Fargate (linux/amd64), after the tests pass.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build.sh

Runs the tests (`make test`), then builds the image from the Dockerfile with
`docker buildx build --platform linux/amd64` and prints the image reference it built as the
last line of its output. The one image runs both containers: `senso api` and `senso worker`.

Environment:
  IMAGE_REPOSITORY  image name without the tag, e.g. a registry path (default: senso)
  IMAGE_TAG         tag (default: the UTC time, YYYYMMDDHHMMSS)
  TAG_FROM_GIT      true: tag with the git short sha instead, plus -dirty when the work tree
                    has uncommitted changes (default: false)
  PUSH              true: push to the registry (log in first); false: load the image into the
                    local docker (default: false)
  SKIP_TESTS        true: build without running the tests (default: false)
Needs docker with buildx.
USAGE
}

if [[ ${1:-} == "-h" || ${1:-} == "--help" ]]; then
  usage
  exit 0
fi
if [[ $# -ne 0 ]]; then
  usage >&2
  exit 2
fi

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
repository=${IMAGE_REPOSITORY:-senso}
tag_from_git=${TAG_FROM_GIT:-false}
push=${PUSH:-false}
skip_tests=${SKIP_TESTS:-false}

for flag in TAG_FROM_GIT PUSH SKIP_TESTS; do
  if [[ ${!flag:-false} != true && ${!flag:-false} != false ]]; then
    echo "build.sh: ${flag} must be true or false, not '${!flag}'" >&2
    exit 2
  fi
done

if [[ $tag_from_git == true ]]; then
  if [[ -n ${IMAGE_TAG:-} ]]; then
    echo "build.sh: set IMAGE_TAG or TAG_FROM_GIT=true, not both" >&2
    exit 2
  fi
  tag=$(git -C "$root" rev-parse --short HEAD)
  # An image built from uncommitted changes must not pass for that commit.
  if ! git -C "$root" diff --quiet HEAD --; then
    tag="${tag}-dirty"
  fi
else
  tag=${IMAGE_TAG:-$(date -u +%Y%m%d%H%M%S)}
fi
image="${repository}:${tag}"

if [[ $skip_tests == true ]]; then
  echo "==> SKIP_TESTS=true: building without running the tests" >&2
else
  echo "==> running the tests (make test)" >&2
  make -C "$root" test >&2
fi

output=--load
if [[ $push == true ]]; then
  output=--push
fi
echo "==> building ${image} (linux/amd64, ${output#--})" >&2
docker buildx build --platform linux/amd64 --file "${root}/Dockerfile" --tag "$image" \
  "$output" "$root" >&2
echo "$image"
