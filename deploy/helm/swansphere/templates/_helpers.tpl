{{/*
Names, labels and the pieces every pod shares. Components: gateway, the four stages (video-encoder,
spatial-lm, locdit, vae-decoder), triton, train-<job>, odpo, synthsphere, redis, minio.
*/}}

{{- define "swansphere.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-swansphere, or the release name alone when it already contains the chart name. */}}
{{- define "swansphere.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The four stages: values key, `swansphere serve` name, Kubernetes name (component label). */}}
{{- define "swansphere.stages" -}}
- {key: videoEncoder, stage: video_encoder, component: video-encoder}
- {key: spatialLm, stage: spatial_lm, component: spatial-lm}
- {key: locdit, stage: locdit, component: locdit}
- {key: vaeDecoder, stage: vae_decoder, component: vae-decoder}
{{- end }}

{{- define "swansphere.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swansphere.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object: call with (dict "root" $ "component" NAME). */}}
{{- define "swansphere.labels" -}}
{{ include "swansphere.selectorLabels" . }}
app.kubernetes.io/part-of: swansphere
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* REPOSITORY:TAG of (dict "root" $ "image" .Values.X.image); TAG may be tag@digest. */}}
{{- define "swansphere.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "swansphere.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swansphere.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "swansphere.jobSubmitterName" -}}
{{- default (printf "%s-job-submitter" (include "swansphere.fullname" .)) .Values.jobSubmitter.name }}
{{- end }}

{{/* The Secret with access-key and secret-key: created from values, else the existing one. */}}
{{- define "swansphere.s3Secret" -}}
{{- if .Values.s3.accessKey }}
{{- printf "%s-s3" (include "swansphere.fullname" .) }}
{{- else }}
{{- required "s3.existingSecret (or s3.accessKey and s3.secretKey) is required" .Values.s3.existingSecret }}
{{- end }}
{{- end }}

{{- define "swansphere.s3Endpoint" -}}
{{- if .Values.dev.minio.enabled }}
{{- printf "http://%s-minio:9000" (include "swansphere.fullname" .) }}
{{- else }}
{{- .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* s3://bucket/prefix: the repository as the services' storage layer names it. */}}
{{- define "swansphere.modelRepository" -}}
{{- printf "s3://%s/%s" .Values.modelRepository.bucket (trimAll "/" .Values.modelRepository.prefix) }}
{{- end }}

{{/* Triton's spelling: s3://host:port/bucket/prefix, s3://https://host:port/... over TLS; the port
is mandatory there, so the scheme's default is filled in. */}}
{{- define "swansphere.tritonRepository" -}}
{{- $url := urlParse (include "swansphere.s3Endpoint" .) }}
{{- $host := $url.host }}
{{- if not (contains ":" $host) }}
{{- $host = printf "%s:%s" $host (ternary "443" "80" (eq $url.scheme "https")) }}
{{- end }}
{{- $scheme := ternary "https://" "" (eq $url.scheme "https") }}
{{- printf "s3://%s%s/%s/%s" $scheme $host .Values.modelRepository.bucket (trimAll "/" .Values.modelRepository.prefix) }}
{{- end }}

{{/* S3 credentials and endpoint, as swansphere.storage, Triton and boto-style clients read them. */}}
{{- define "swansphere.s3Env" -}}
- name: S3_ENDPOINT_URL
  value: {{ include "swansphere.s3Endpoint" . | quote }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "swansphere.s3Secret" . }}
      key: access-key
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "swansphere.s3Secret" . }}
      key: secret-key
{{- end }}

{{- define "swansphere.redisEnv" -}}
{{- if .Values.dev.redis.enabled }}
- name: SWANSPHERE_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "swansphere.fullname" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: SWANSPHERE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else }}
- name: SWANSPHERE_REDIS_URL
  value: {{ required "redis.url (or redis.existingSecret, or dev.redis.enabled) is required" .Values.redis.url | quote }}
{{- end }}
{{- end }}

{{/* Settings shared by the gateway and the stages (services/common/settings.py). */}}
{{- define "swansphere.serviceEnv" -}}
- name: SWANSPHERE_HOST
  value: "0.0.0.0"
- name: SWANSPHERE_PORT
  value: {{ .Values.ports.grpc | quote }}
- name: SWANSPHERE_METRICS_PORT
  value: {{ .Values.ports.metrics | quote }}
- name: SWANSPHERE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: SWANSPHERE_TRITON_URL
  value: {{ printf "%s-triton:8001" (include "swansphere.fullname" .) | quote }}
- name: SWANSPHERE_MODEL_REPOSITORY
  value: {{ include "swansphere.modelRepository" . | quote }}
{{- include "swansphere.redisEnv" . | trim | nindent 0 }}
{{- include "swansphere.s3Env" . | trim | nindent 0 }}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- end }}

{{/* The container securityContext every container gets. */}}
{{- define "swansphere.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Pod-level fields every pod shares. */}}
{{- define "swansphere.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* requests and limits of (dict "cpu" C "memory" M "gpus" N): Guaranteed QoS for the jobs. GPUs go
in limits only (an extended resource's request defaults to its limit), as `swansphere-ml submit` does. */}}
{{- define "swansphere.guaranteedResources" -}}
requests:
  cpu: {{ .cpu | quote }}
  memory: {{ .memory | quote }}
limits:
  cpu: {{ .cpu | quote }}
  memory: {{ .memory | quote }}
  {{- if .gpus }}
  nvidia.com/gpu: {{ .gpus | quote }}
  {{- end }}
{{- end }}

{{/* Spread replicas of one component over nodes: call with (dict "root" $ "component" NAME). */}}
{{- define "swansphere.topologySpread" -}}
{{- if .root.Values.topologySpread }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "swansphere.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* The gateway and the stages: the gRPC services (`swansphere serve NAME`), each with its values. */}}
{{- define "swansphere.components" -}}
- {key: gateway, stage: gateway, component: gateway}
{{ include "swansphere.stages" . }}
{{- end }}

{{/* The values of one entry of swansphere.components: call with (dict "root" $ "c" ENTRY). */}}
{{- define "swansphere.componentValues" -}}
{{- if eq .c.key "gateway" }}
{{- toYaml .root.Values.gateway }}
{{- else }}
{{- toYaml (index .root.Values.stages .c.key) }}
{{- end }}
{{- end }}

{{/* SWANSPHERE_STAGE_TARGETS of the gateway: the four stage Services' HOST:PORT. */}}
{{- define "swansphere.stageTargets" -}}
{{- $fullname := include "swansphere.fullname" . }}
{{- $targets := list }}
{{- range $s := fromYamlArray (include "swansphere.stages" .) }}
{{- $targets = append $targets (printf "%s-%s:%d" $fullname $s.component (int $.Values.ports.grpc)) }}
{{- end }}
{{- join "," $targets }}
{{- end }}
