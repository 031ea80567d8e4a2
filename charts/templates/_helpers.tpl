{{/* Names, labels and derived settings shared by the templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "maddpg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RELEASE-CHART (or the release name alone when it already holds the chart name), at most 52 characters so
that component suffixes still fit in 63. */}}
{{- define "maddpg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* CHART-VERSION for the helm.sh/chart label. */}}
{{- define "maddpg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods of one component. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "maddpg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maddpg.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. part-of is the fixed value the launcher also puts on run pods (the PodMonitor selects it).
Call with (dict "ctx" $ "component" "api"). */}}
{{- define "maddpg.labels" -}}
helm.sh/chart: {{ include "maddpg.chart" .ctx }}
{{ include "maddpg.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: maddpg
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "maddpg.apiName" -}}
{{- printf "%s-api" (include "maddpg.fullname" .) -}}
{{- end -}}

{{- define "maddpg.redisName" -}}
{{- printf "%s-redis" (include "maddpg.fullname" .) -}}
{{- end -}}

{{/* The API's ServiceAccount. */}}
{{- define "maddpg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "maddpg.apiName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount of run pods. */}}
{{- define "maddpg.runServiceAccountName" -}}
{{- if .Values.runs.serviceAccount.create -}}
{{- default (printf "%s-run" (include "maddpg.fullname" .)) .Values.runs.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.runs.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart's image, REPOSITORY:TAG. */}}
{{- define "maddpg.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The image of run pods: runs.image, each part defaulting to the chart's image. */}}
{{- define "maddpg.runImage" -}}
{{- $repository := default .Values.image.repository .Values.runs.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.runs.image.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* "true" when Redis needs a password: the bundled one with redis.auth.enabled, or an external one with its
Secret given. */}}
{{- define "maddpg.redisAuth" -}}
{{- if and .Values.redis.auth.enabled (or (not .Values.redis.external.url) .Values.redis.auth.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret with the Redis password. */}}
{{- define "maddpg.redisSecretName" -}}
{{- default (include "maddpg.redisName" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* The env var REDIS_PASSWORD, from the Secret; list it before REDIS_URL, which refers to it. */}}
{{- define "maddpg.redisPasswordEnv" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "maddpg.redisSecretName" . }}
      key: {{ .Values.redis.auth.secretKey }}
{{- end -}}

{{/* REDIS_URL: redis.external.url, or the bundled Redis's Service; with a password, $(REDIS_PASSWORD) in it,
which Kubernetes replaces by the Secret's value in the container (`kubectl get -o yaml` shows no password). */}}
{{- define "maddpg.redisUrl" -}}
{{- $url := .Values.redis.external.url | default (printf "redis://%s.%s.svc:6379/0" (include "maddpg.redisName" .) .Release.Namespace) -}}
{{- if include "maddpg.redisAuth" . -}}
{{- $scheme := regexFind "^rediss?://" $url -}}
{{- printf "%s:$(REDIS_PASSWORD)@%s" $scheme (trimPrefix $scheme $url) -}}
{{- else -}}
{{- $url -}}
{{- end -}}
{{- end -}}

{{/* MADDPG_API_CHECKPOINT_URI: s3://BUCKET/PREFIX (no slash at either end of the prefix). */}}
{{- define "maddpg.checkpointUri" -}}
{{- $prefix := trimAll "/" .Values.s3.prefix -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" .Values.s3.bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.s3.bucket -}}
{{- end -}}
{{- end -}}

{{/* The checkpoint claim: checkpoints.pvc.existingClaim, or the chart's own. */}}
{{- define "maddpg.checkpointClaim" -}}
{{- default (printf "%s-checkpoints" (include "maddpg.fullname" .)) .Values.checkpoints.pvc.existingClaim -}}
{{- end -}}

{{/* MADDPG_API_IMAGE_PULL_SECRETS: the names of imagePullSecrets, as a JSON list. */}}
{{- define "maddpg.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* Values that contradict each other: a message for `fail`. */}}
{{- define "maddpg.validate" -}}
{{- if and .Values.s3.enabled .Values.checkpoints.pvc.enabled -}}
{{- fail "s3.enabled and checkpoints.pvc.enabled are both set: choose one checkpoint store for the runs" -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/]*@" .Values.redis.external.url -}}
{{- fail "redis.external.url holds credentials, a plain value: put the password in a Secret and name it in redis.auth.existingSecret" -}}
{{- end -}}
{{- if and .Values.redis.external.url .Values.redis.auth.enabled (not .Values.redis.auth.existingSecret) -}}
{{- fail "redis.external.url needs its password: name its Secret in redis.auth.existingSecret (key redis.auth.secretKey), or set redis.auth.enabled=false for a Redis without one" -}}
{{- end -}}
{{- end -}}

{{/* Labels of the pods of every run the API starts (services/api/launchers/objects.py labels()). */}}
{{- define "maddpg.runPodLabels" -}}
app.kubernetes.io/managed-by: maddpg-api
app.kubernetes.io/part-of: maddpg
{{- end -}}

{{/* The labels of the Prometheus pods, as JSON: networkPolicy.metrics.podLabels, or the Operator's. */}}
{{- define "maddpg.prometheusPodLabels" -}}
{{- .Values.networkPolicy.metrics.podLabels | default (dict "app.kubernetes.io/name" "prometheus") | toJson -}}
{{- end -}}

{{/* The Prometheus pods, as a NetworkPolicy peer (the same the API puts in each run's policy). */}}
{{- define "maddpg.prometheusPeer" -}}
namespaceSelector:
  {{- with .Values.networkPolicy.metrics.namespaceLabels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- else }} {}
  {{- end }}
podSelector:
  matchLabels:
    {{- include "maddpg.prometheusPodLabels" . | fromJson | toYaml | nindent 4 }}
{{- end -}}

{{/* The API container's resources: api.resources, or with launcher=local (its runs inside the pod) the
api.localRuns.resources the user must size; a default run alone would exceed api.resources. */}}
{{- define "maddpg.apiResources" -}}
{{- if eq .Values.launcher "local" -}}
{{- $r := .Values.api.localRuns.resources -}}
{{- if not (and (dig "requests" "cpu" "" $r) (dig "requests" "memory" "" $r) (dig "limits" "cpu" "" $r) (dig "limits" "memory" "" $r)) -}}
{{- fail "launcher=local runs every run inside the API pod, and one default-size run (about 1.5 CPU, 2.5Gi; up to 3 CPU, 5Gi) already exceeds api.resources: set api.localRuns.resources (cpu and memory, requests and limits) for the runs you start at once, or use launcher=kubernetes" -}}
{{- end -}}
{{- toYaml $r -}}
{{- else -}}
{{- toYaml .Values.api.resources -}}
{{- end -}}
{{- end -}}
