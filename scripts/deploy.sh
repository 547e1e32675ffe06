#!/usr/bin/env bash
# Build, push and deploy senso to ECS Fargate: see --help and the README's deployment section.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/deploy.sh

Deploys senso to ECS Fargate, configured by the environment:
  1. checks the variables below (exit 2 naming every missing one);
  2. renders the task definition and validates it offline, the cpu/memory pair included,
     before any AWS call (exit 2 when it is invalid);
  3. reads the ECR repository, the log group and the service; runs the tests (make test)
     when it builds, unless SKIP_TESTS=true: nothing in AWS changes before they pass;
  4. creates the ECR repository and the log group if absent; builds and pushes the image
     (scripts/build.sh) unless SKIP_BUILD=true;
  5. registers the task definition; updates the service, or creates it with the deployment
     circuit breaker and rollback on;
  6. waits until the new deployment is steady, and fails if it was rolled back;
  7. prints the new and previous revisions and the command that rolls back.

Required:
  AWS_REGION                 region (AWS_DEFAULT_REGION is used when unset)
  ECR_REPOSITORY             ECR repository name (created if absent)
  ECS_CLUSTER                an existing ECS cluster
  ECS_SERVICE                service name (created if absent)
  ECS_SUBNET_IDS             comma-separated subnet ids of the tasks
  ECS_SECURITY_GROUP_IDS     comma-separated security group ids of the tasks
  EXECUTION_ROLE_ARN         task execution role: pulls the image, reads the secrets, writes logs
  TASK_ROLE_ARN              task role: the app's own AWS access (SQS)
  SQS_QUEUE_URL              the job queue
  DATABASE_URL_SECRET_ARN    secret holding DATABASE_URL (postgresql+asyncpg://...)
  API_TOKEN_SECRET_ARN       secret holding the operator's API_TOKEN
  ENABLED_ENGINES            comma-separated engine ids the deployment serves (GET /engines
                             lists them), set alike on the API and the worker; one whose
                             key's secret below is unset is refused (exit 2)

Optional (default):
  AWS_ACCOUNT_ID             the caller's: account of the ECR registry; the image reference is
                             the repository's URI as ECR returns it (only a dry run for a
                             repository not created yet asks `aws sts get-caller-identity`)
  TASK_FAMILY                senso
  CONTAINER_NAME             api: name of the API container
  TASK_CPU, TASK_MEMORY      512, 1024: a pair Fargate allows
  DESIRED_COUNT              1: tasks of a new service; when set, an update sets it too
  IMAGE_TAG                  the UTC time (YYYYMMDDHHMMSS); required with SKIP_BUILD=true
  SKIP_BUILD                 false: true deploys IMAGE_TAG as already pushed
  SKIP_TESTS                 false: true builds without running the tests
  CLOUDWATCH_LOG_GROUP       /ecs/$TASK_FAMILY (created if absent)
  CLOUDWATCH_STREAM_PREFIX   ecs: streams are <prefix>-api/... and <prefix>-worker/...
  LOG_RETENTION_DAYS         30: retention of a log group this script creates
  ASSIGN_PUBLIC_IP           DISABLED: ENABLED for public subnets without a NAT gateway
  TARGET_GROUP_ARN           unset: a new service registers the API's port 8080 in this target group
  AUDIT_SQS_QUEUE_URL        unset: the audit queue the worker consumes (infra/sqs-queues.cfn.json)
  WORKER_MODE                sidecar: the API and worker task of infra/ecs-task-def.json.template;
                             service: its worker container alone, essential, as family
                             $TASK_FAMILY-worker and service $ECS_SERVICE-worker
  REDIS_URL_SECRET_ARN, OPENAI_API_KEY_SECRET_ARN, AZURE_OPENAI_API_KEY_SECRET_ARN,
  ANTHROPIC_API_KEY_SECRET_ARN, BRIGHTDATA_API_KEY_SECRET_ARN, LINKUP_API_KEY_SECRET_ARN,
  GEMINI_API_KEY_SECRET_ARN, PERPLEXITY_API_KEY_SECRET_ARN, DATAFORSEO_LOGIN_SECRET_ARN,
  DATAFORSEO_PASSWORD_SECRET_ARN
                             more secrets, left out when unset
  REPORT_SIGNING_KEY_SECRET_ARN
                             unset: the API signs report links (GET /r/...) with a key made
                             when it starts, so links end with the task; set it in production
  SENSO_<SETTING>            any app setting of the README, e.g. SENSO_LOG_LEVEL=DEBUG sets
                             LOG_LEVEL=DEBUG in every container
  WAIT                       true: false returns once the service is updated
  WAIT_TIMEOUT_SECONDS       900
  WAIT_POLL_SECONDS          15
  DRY_RUN                    false: true prints the task definition and what it would run (the
                             tests, the build, the calls that change something), and changes
                             nothing
  PYTHON                     python3: a python that can import botocore (renders, validates)

Exit status: 0 deployed; 2 the configuration is invalid; any other: a step failed, or the
deployment failed or was rolled back.
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
# What a dry run would do goes to the script's stdout, even from inside $(...).
exec 3>&1

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'deploy.sh: warning: %s\n' "$*" >&2; }
fail() {
  printf 'deploy.sh: %s\n' "$1" >&2
  exit "${2:-1}"
}

# --- 1. configuration --------------------------------------------------------------------

AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
required=(AWS_REGION ECR_REPOSITORY ECS_CLUSTER ECS_SERVICE ECS_SUBNET_IDS
  ECS_SECURITY_GROUP_IDS EXECUTION_ROLE_ARN TASK_ROLE_ARN SQS_QUEUE_URL
  DATABASE_URL_SECRET_ARN API_TOKEN_SECRET_ARN ENABLED_ENGINES)
missing=()
for name in "${required[@]}"; do
  [[ -n ${!name:-} ]] || missing+=("$name")
done
if ((${#missing[@]})); then
  fail "missing required variables: ${missing[*]} (see --help)" 2
fi

desired_count_given=${DESIRED_COUNT:+yes}
TASK_FAMILY=${TASK_FAMILY:-senso}
CONTAINER_NAME=${CONTAINER_NAME:-api}
TASK_CPU=${TASK_CPU:-512}
TASK_MEMORY=${TASK_MEMORY:-1024}
DESIRED_COUNT=${DESIRED_COUNT:-1}
SKIP_BUILD=${SKIP_BUILD:-false}
SKIP_TESTS=${SKIP_TESTS:-false}
CLOUDWATCH_LOG_GROUP=${CLOUDWATCH_LOG_GROUP:-/ecs/${TASK_FAMILY}}
CLOUDWATCH_STREAM_PREFIX=${CLOUDWATCH_STREAM_PREFIX:-ecs}
LOG_RETENTION_DAYS=${LOG_RETENTION_DAYS:-30}
ASSIGN_PUBLIC_IP=${ASSIGN_PUBLIC_IP:-DISABLED}
WORKER_MODE=${WORKER_MODE:-sidecar}
WAIT=${WAIT:-true}
WAIT_TIMEOUT_SECONDS=${WAIT_TIMEOUT_SECONDS:-900}
WAIT_POLL_SECONDS=${WAIT_POLL_SECONDS:-15}
DRY_RUN=${DRY_RUN:-false}
PYTHON=${PYTHON:-python3}
ECS_SUBNET_IDS=${ECS_SUBNET_IDS// /}
ECS_SECURITY_GROUP_IDS=${ECS_SECURITY_GROUP_IDS// /}

problems=()
check() { # check NAME REGEX EXPLANATION
  [[ ${!1} =~ $2 ]] || problems+=("$1='${!1}': $3")
}
for flag in SKIP_BUILD SKIP_TESTS WAIT DRY_RUN; do
  check "$flag" '^(true|false)$' "true or false"
done
check WORKER_MODE '^(sidecar|service)$' "sidecar or service"
check ASSIGN_PUBLIC_IP '^(ENABLED|DISABLED)$' "ENABLED or DISABLED"
check DESIRED_COUNT '^[0-9]+$' "a whole number"
check LOG_RETENTION_DAYS '^[0-9]+$' "a whole number of days"
check WAIT_TIMEOUT_SECONDS '^[0-9]+$' "a whole number of seconds"
check WAIT_POLL_SECONDS '^[0-9]+([.][0-9]+)?$' "a number of seconds"
check ECS_SUBNET_IDS '^subnet-[0-9a-f]+(,subnet-[0-9a-f]+)*$' "comma-separated subnet ids"
check ECS_SECURITY_GROUP_IDS '^sg-[0-9a-f]+(,sg-[0-9a-f]+)*$' "comma-separated security group ids"
check ECR_REPOSITORY '^[a-z0-9]+([._/-][a-z0-9]+)*$' "an ECR repository name"
check ECS_CLUSTER '^[A-Za-z0-9_-]{1,255}$' "a cluster name"
check ECS_SERVICE '^[A-Za-z0-9_-]{1,255}$' "a service name"
check CLOUDWATCH_LOG_GROUP '^[-._/#A-Za-z0-9]{1,512}$' "a log group name"
check CLOUDWATCH_STREAM_PREFIX '^[^:*]{1,100}$' "a log stream prefix (no : or *)"
if [[ -n ${AWS_ACCOUNT_ID:-} ]]; then
  check AWS_ACCOUNT_ID '^[0-9]{12}$' "twelve digits"
fi
if [[ -n ${IMAGE_TAG:-} ]]; then
  check IMAGE_TAG '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' "a docker image tag"
elif [[ $SKIP_BUILD == true ]]; then
  problems+=("SKIP_BUILD=true deploys an image already pushed: set IMAGE_TAG to its tag")
fi
if [[ -n ${TARGET_GROUP_ARN:-} ]]; then
  check TARGET_GROUP_ARN '^arn:aws[a-z-]*:elasticloadbalancing:[^,= ]+$' "a target group ARN"
fi
if ((${#problems[@]})); then
  fail "invalid configuration:$(printf '\n  %s' "${problems[@]}")" 2
fi

if ! "$PYTHON" -c 'import botocore' 2>/dev/null; then
  fail "PYTHON=${PYTHON} cannot import botocore: pip install botocore, or set PYTHON" 2
fi
command -v aws >/dev/null || fail "the AWS CLI (aws) is not on PATH" 2

IMAGE_TAG=${IMAGE_TAG:-$(date -u +%Y%m%d%H%M%S)}
render=("$PYTHON" "${root}/scripts/render_task_def.py" render)
if [[ $WORKER_MODE == service ]]; then
  render+=(--worker-alone)
  family=${TASK_FAMILY}-worker
  service=${ECS_SERVICE}-worker
else
  family=$TASK_FAMILY
  service=$ECS_SERVICE
fi
# The AWS CLI v2 would page its output through `less`; v1 reads AWS_DEFAULT_REGION.
export AWS_PAGER="" AWS_DEFAULT_REGION=$AWS_REGION

# --- 2. render and validate, before any AWS call -----------------------------------------

export AWS_REGION TASK_FAMILY CONTAINER_NAME TASK_CPU TASK_MEMORY CLOUDWATCH_LOG_GROUP \
  CLOUDWATCH_STREAM_PREFIX
workdir=$(mktemp -d)
trap 'rm -rf -- "$workdir"' EXIT
task_definition_file=${workdir}/task-definition.json
# The image is the repository's URI, which ECR tells below; until then a stand-in holds its
# place (the validator asks only for a reference without spaces, which the URI is).
image_stand_in=deploy-sh-image-stand-in
IMAGE_URI=$image_stand_in "${render[@]}" "${root}/infra/ecs-task-def.json.template" \
  >"$task_definition_file" || fail "the task definition is invalid (nothing was changed)" 2
log "task definition rendered and validated"

# set_image REPOSITORY_URI: the task definition runs REPOSITORY_URI:IMAGE_TAG.
set_image() {
  IMAGE_URI=$1:${IMAGE_TAG}
  local definition
  definition=$(<"$task_definition_file")
  printf '%s\n' "${definition//"$image_stand_in"/"$IMAGE_URI"}" >"$task_definition_file"
}

# --- 3. read the current state; run the tests --------------------------------------------

registry_id=()
if [[ -n ${AWS_ACCOUNT_ID:-} ]]; then
  registry_id=(--registry-id "$AWS_ACCOUNT_ID")
fi
repository_exists=true
if repository=$(aws ecr describe-repositories ${registry_id[@]+"${registry_id[@]}"} \
  --repository-names "$ECR_REPOSITORY" \
  --query 'repositories[0].[repositoryUri,imageTagMutability]' --output text \
  2>"${workdir}/describe-repositories.err"); then
  read -r repository_uri tag_mutability <<<"$repository"
  set_image "$repository_uri"
  if [[ $tag_mutability != IMMUTABLE ]]; then
    warn "ECR repository ${ECR_REPOSITORY} has ${tag_mutability} image tags: a tag pushed" \
      "again changes what the revisions using it run, an old revision included"
  fi
else
  repository_error=$(<"${workdir}/describe-repositories.err")
  [[ $repository_error == *RepositoryNotFoundException* ]] ||
    fail "cannot read ECR repository ${ECR_REPOSITORY}: ${repository_error}"
  repository_exists=false
  if [[ $DRY_RUN == true ]]; then
    # Creating the repository would return its URI; a dry run builds it as ECR does.
    account=${AWS_ACCOUNT_ID:-}
    if [[ -z $account ]]; then
      account=$(aws sts get-caller-identity --query Account --output text)
    fi
    set_image "${account}.dkr.ecr.${AWS_REGION}.amazonaws.com/${ECR_REPOSITORY}"
  fi
fi
log_groups=$(aws logs describe-log-groups --log-group-name-prefix "$CLOUDWATCH_LOG_GROUP" \
  --query 'logGroups[].logGroupName' --output text)
# Text output separates names with tabs within a page and newlines between pages.
log_groups=$'\n'${log_groups//$'\t'/$'\n'}$'\n'
log_group_exists=false
if [[ $log_groups == *$'\n'"${CLOUDWATCH_LOG_GROUP}"$'\n'* ]]; then
  log_group_exists=true
fi
previous=$(aws ecs describe-services --cluster "$ECS_CLUSTER" --services "$service" \
  --query "services[?status=='ACTIVE'].taskDefinition | [0]" --output text)
[[ $previous != None ]] || previous=""

# Runs a command that changes something or takes long; under DRY_RUN prints it instead.
change() {
  if [[ $DRY_RUN == true ]]; then
    printf 'would run:' >&3
    printf ' %q' "$@" >&3
    printf '\n' >&3
    return 0
  fi
  "$@"
}

if [[ $DRY_RUN == true ]]; then
  cat "$task_definition_file"
fi

if [[ $SKIP_BUILD == false && $SKIP_TESTS == false ]]; then
  log "running the tests (make test)"
  change make -C "$root" test >&2 || fail "the tests failed (nothing was changed)"
fi

# --- 4-5. changes ------------------------------------------------------------------------

if [[ $repository_exists == true ]]; then
  log "ECR repository ${ECR_REPOSITORY} exists"
else
  log "creating ECR repository ${ECR_REPOSITORY}"
  created=$(change aws ecr create-repository ${registry_id[@]+"${registry_id[@]}"} \
    --repository-name "$ECR_REPOSITORY" --image-tag-mutability IMMUTABLE \
    --image-scanning-configuration scanOnPush=true --query repository.repositoryUri \
    --output text)
  # A dry run creates nothing and has set the image already.
  if [[ -n $created ]]; then
    log "created ${created}"
    set_image "$created"
  fi
fi

if [[ $log_group_exists == true ]]; then
  log "log group ${CLOUDWATCH_LOG_GROUP} exists"
else
  log "creating log group ${CLOUDWATCH_LOG_GROUP} (${LOG_RETENTION_DAYS} days)"
  change aws logs create-log-group --log-group-name "$CLOUDWATCH_LOG_GROUP"
  change aws logs put-retention-policy --log-group-name "$CLOUDWATCH_LOG_GROUP" \
    --retention-in-days "$LOG_RETENTION_DAYS"
fi

if [[ $SKIP_BUILD == true ]]; then
  log "SKIP_BUILD=true: deploying ${IMAGE_URI} as pushed"
else
  registry=${IMAGE_URI%%/*}
  if [[ $DRY_RUN == true ]]; then
    printf 'would run: aws ecr get-login-password | docker login --username AWS --password-stdin %q\n' \
      "$registry" >&3
  else
    log "logging in to ${registry}"
    aws ecr get-login-password | docker login --username AWS --password-stdin "$registry" >&2
  fi
  # The tests ran above, unless SKIP_TESTS=true.
  change env "IMAGE_REPOSITORY=${IMAGE_URI%:*}" "IMAGE_TAG=${IMAGE_TAG}" PUSH=true \
    SKIP_TESTS=true "${root}/scripts/build.sh" >&2
fi

log "registering the task definition"
new=$(change aws ecs register-task-definition --cli-input-json "file://${task_definition_file}" \
  --query taskDefinition.taskDefinitionArn --output text)
# A dry run registers nothing; the family alone names its latest revision, the one it would be.
new=${new:-$family}

network="awsvpcConfiguration={subnets=[${ECS_SUBNET_IDS}],securityGroups=[${ECS_SECURITY_GROUP_IDS}],assignPublicIp=${ASSIGN_PUBLIC_IP}}"
deployment="deploymentCircuitBreaker={enable=true,rollback=true},maximumPercent=200,minimumHealthyPercent=100"
primary_id="service.deployments[?status=='PRIMARY'].id | [0]"
if [[ -n $previous ]]; then
  log "updating service ${service}: ${previous##*/} -> ${new##*/}"
  update=(aws ecs update-service --cluster "$ECS_CLUSTER" --service "$service"
    --task-definition "$new" --network-configuration "$network"
    --deployment-configuration "$deployment")
  if [[ -n $desired_count_given ]]; then
    update+=(--desired-count "$DESIRED_COUNT")
  fi
  deployment_id=$(change "${update[@]}" --query "$primary_id" --output text)
else
  log "creating service ${service} (${DESIRED_COUNT} tasks)"
  create=(aws ecs create-service --cluster "$ECS_CLUSTER" --service-name "$service"
    --task-definition "$new" --desired-count "$DESIRED_COUNT" --launch-type FARGATE
    --platform-version LATEST --network-configuration "$network"
    --deployment-configuration "$deployment" --propagate-tags TASK_DEFINITION
    --enable-ecs-managed-tags)
  if [[ -n ${TARGET_GROUP_ARN:-} && $WORKER_MODE == sidecar ]]; then
    create+=(--load-balancers
      "targetGroupArn=${TARGET_GROUP_ARN},containerName=${CONTAINER_NAME},containerPort=8080"
      --health-check-grace-period-seconds 60)
  fi
  deployment_id=$(change "${create[@]}" --query "$primary_id" --output text)
fi

if [[ $DRY_RUN == true ]]; then
  log "dry run: nothing was changed"
  exit 0
fi

# --- 6. wait ------------------------------------------------------------------------------

if [[ $WAIT == true ]]; then
  log "waiting up to ${WAIT_TIMEOUT_SECONDS}s for deployment ${deployment_id} of ${new##*/}"
  deadline=$((SECONDS + WAIT_TIMEOUT_SECONDS))
  while :; do
    outcome=$(aws ecs describe-services --cluster "$ECS_CLUSTER" --services "$service" \
      --output json | "$PYTHON" "${root}/scripts/check_deployment.py" \
      --deployment-id "$deployment_id" --task-definition "$new")
    case $outcome in
      succeeded:*) break ;;
      failed:*) fail "deployment of ${new##*/} to ${service} ${outcome}" ;;
    esac
    if ((SECONDS >= deadline)); then
      fail "gave up waiting after ${WAIT_TIMEOUT_SECONDS}s: ${outcome}"
    fi
    log "$outcome"
    sleep "$WAIT_POLL_SECONDS"
  done
  log "$outcome"
else
  log "WAIT=false: not waiting for the deployment"
fi

# --- 7. summary ---------------------------------------------------------------------------

echo "service: ${ECS_CLUSTER}/${service}"
echo "new revision: ${new##*/}"
if [[ -n $previous ]]; then
  echo "previous revision: ${previous##*/}"
  printf 'rollback: aws ecs update-service --region %q --cluster %q --service %q --task-definition %q\n' \
    "$AWS_REGION" "$ECS_CLUSTER" "$service" "${previous##*/}"
else
  echo "previous revision: none (the service was created)"
fi
