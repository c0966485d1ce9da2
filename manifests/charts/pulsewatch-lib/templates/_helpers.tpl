{{/*
Shared helpers for the PulseWatch charts: the library chart pulsewatch-lib, a dependency of
every chart under manifests/charts/ (charts/pulsewatch-lib there is a symlink to this
chart). Each chart reads its settings from the section named after the chart
(`.Values.api`, `.Values.worker`, ...) plus `.Values.global`, so one env file keyed by chart
name (manifests/envs/<env>/values.yaml) serves as `-f` for every chart.
*/}}

{{/* Object name: the release name, or release-chart when the release name does not contain the chart name. */}}
{{- define "pw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels used in selectors: never change them on a live release. */}}
{{- define "pw.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. pulsedev.dev/stack is what `pulsedev` prunes by. */}}
{{- define "pw.labels" -}}
{{ include "pw.selectorLabels" . }}
app.kubernetes.io/part-of: pulsewatch
app.kubernetes.io/component: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Values.global.managedBy | default .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
pulsedev.dev/stack: pulsewatch
{{- end -}}

{{/*
Image reference. The digest wins when set (repository:tag@digest keeps the tag readable;
the runtime pulls by digest). With global.requireImageDigest an empty digest is an error.
*/}}
{{- define "pw.image" -}}
{{- $img := (index .Values .Chart.Name).image -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $img.repository $img.tag $img.digest -}}
{{- else if .Values.global.requireImageDigest -}}
{{- fail (printf "%s.image.digest is required in this environment (global.requireImageDigest): deploy by digest, e.g. --set-string %s.image.digest=sha256:..." .Chart.Name .Chart.Name) -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context: restricted Pod Security Standard. */}}
{{- define "pw.podSecurityContext" -}}
{{- $sc := (index .Values .Chart.Name).securityContext -}}
runAsNonRoot: true
runAsUser: {{ $sc.runAsUser }}
runAsGroup: {{ $sc.runAsGroup }}
fsGroup: {{ $sc.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: restricted Pod Security Standard plus a read-only root. */}}
{{- define "pw.containerSecurityContext" -}}
{{- $sc := (index .Values .Chart.Name).securityContext -}}
runAsNonRoot: true
runAsUser: {{ $sc.runAsUser }}
runAsGroup: {{ $sc.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Non-secret connection settings shared by the services (ConfigMap data).
Endpoints come from global.database / global.redis; nothing is hardcoded here.
*/}}
{{- define "pw.connectionConfig" -}}
{{- $db := .Values.global.database -}}
{{- $redis := .Values.global.redis -}}
DATABASE_HOST: {{ $db.host | quote }}
DATABASE_PORT: {{ $db.port | toString | quote }}
DATABASE_NAME: {{ $db.name | quote }}
DATABASE_SSLMODE: {{ $db.sslMode | quote }}
DATABASE_USER_FILE: "/etc/pulsewatch/secrets/db/username"
DATABASE_PASSWORD_FILE: "/etc/pulsewatch/secrets/db/password"
REDIS_HOST: {{ $redis.host | quote }}
REDIS_PORT: {{ $redis.port | toString | quote }}
REDIS_TLS: {{ $redis.tls | toString | quote }}
REDIS_PASSWORD_FILE: "/etc/pulsewatch/secrets/app/redis-password"
{{- end -}}

{{/*
Secrets are mounted as files (never env vars, never values): the Secret *names* come from
global.secrets. The redis-password key is optional (dev Redis has no password); jwt-secret
is mounted only for charts that pass (dict "ctx" . "jwt" true).
*/}}
{{- define "pw.secretVolume" -}}
{{- $g := .ctx.Values.global -}}
- name: secrets
  projected:
    defaultMode: 288  # 0440: owner and fsGroup read
    sources:
      - secret:
          name: {{ $g.secrets.database }}
          items:
            - key: username
              path: db/username
            - key: password
              path: db/password
      {{- if .jwt }}
      - secret:
          name: {{ $g.secrets.app }}
          items:
            - key: jwt-secret
              path: app/jwt-secret
      {{- end }}
      - secret:
          name: {{ $g.secrets.app }}
          optional: true
          items:
            - key: redis-password
              path: app/redis-password
{{- end -}}

{{/* DNS egress (kube-dns / CoreDNS), needed by every pod. */}}
{{- define "pw.dnsEgress" -}}
{{- $dns := .Values.global.networkPolicy.dns -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $dns.podLabels | nindent 10 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/* Pod template checksum of the rendered ConfigMap, so a config change rolls the pods. */}}
{{- define "pw.configChecksum" -}}
{{- include (print $.Template.BasePath "/configmap.yaml") . | sha256sum -}}
{{- end -}}

{{/*
Metrics and tracing settings (ConfigMap data) of a chart with `metrics` and `otel`
sections (api, worker). Empty when both are off, so the default render does not change.
*/}}
{{- define "pw.observabilityConfig" -}}
{{- $v := index .Values .Chart.Name -}}
{{- if $v.metrics.enabled }}
{{- if eq (int $v.metrics.port) (int $v.port) }}
{{- fail (printf "%s.metrics.port must differ from %s.port: /metrics has a listener of its own" .Chart.Name .Chart.Name) }}
{{- end }}
METRICS_PORT: {{ $v.metrics.port | toString | quote }}
{{- end }}
{{- with $v.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: "http/json"
OTEL_SERVICE_NAME: {{ printf "pulsewatch-%s" $.Chart.Name | quote }}
OTEL_RESOURCE_ATTRIBUTES: {{ printf "service.namespace=pulsewatch,k8s.namespace.name=%s" $.Release.Namespace | quote }}
OTEL_TRACES_SAMPLER: "parentbased_traceidratio"
OTEL_TRACES_SAMPLER_ARG: {{ $v.otel.samplerRatio | toString | quote }}
{{- end }}
{{- end -}}

{{/* TCP port of an OTLP endpoint URL: the explicit port, else 443 for https, 80 for http. */}}
{{- define "pw.otlpPort" -}}
{{- $u := urlParse . -}}
{{- $hp := splitList ":" $u.host -}}
{{- if eq (len $hp) 2 -}}
{{- last $hp -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/* Egress to the OTLP collector when <chart>.otel.endpoint is set (NetworkPolicy rules). */}}
{{- define "pw.otlpEgress" -}}
{{- $v := index .Values .Chart.Name -}}
{{- with $v.otel.endpoint }}
- to:
    {{- toYaml $.Values.global.networkPolicy.otlpCollectorPeers | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ include "pw.otlpPort" . }}
{{- end }}
{{- end -}}

{{/* Ingress from the metrics scrapers when <chart>.metrics.enabled (NetworkPolicy rules). */}}
{{- define "pw.metricsIngress" -}}
{{- $v := index .Values .Chart.Name -}}
{{- if $v.metrics.enabled }}
- from:
    {{- toYaml .Values.global.networkPolicy.metricsScraperPeers | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ $v.metrics.port }}
{{- end }}
{{- end -}}

{{/*
ServiceMonitor (Prometheus Operator CRD) for the chart's Service port `metrics`. Rendered
only when <chart>.metrics.serviceMonitor.enabled (the schema then requires metrics.enabled).
*/}}
{{- define "pw.serviceMonitor" -}}
{{- $v := index .Values .Chart.Name -}}
{{- $sm := $v.metrics.serviceMonitor -}}
{{- if $sm.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "pw.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pw.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "pw.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .Release.Namespace }}
  endpoints:
    - port: metrics
      path: /metrics
      scheme: http
      interval: {{ $sm.interval | default "30s" }}
      scrapeTimeout: {{ $sm.scrapeTimeout | default "10s" }}
{{- end }}
{{- end -}}

{{/*
Live update (dev only; docs/DECISIONS.md "Live update"). `pulsedev dev` copies changed
files into the running container over the exec API (tar, as `kubectl cp` does). The root
filesystem stays read-only: a writable emptyDir is mounted only at
<chart>.liveUpdate.path, and an initContainer of the same image seeds it with the image's
own files there, so the container starts with exactly what the image holds. Nothing of
this renders unless <chart>.liveUpdate.enabled (set by manifests/envs/dev/values.yaml only).
*/}}
{{- define "pw.liveUpdateInit" -}}
{{- $v := index .Values .Chart.Name -}}
{{- if $v.liveUpdate.enabled }}
initContainers:
  - name: live-update-seed
    image: {{ include "pw.image" . | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command: ["sh", "-c", "cp -R \"$0\"/. /live-update/", {{ $v.liveUpdate.path | quote }}]
    resources:
      {{- toYaml $v.resources | nindent 6 }}
    securityContext:
      {{- include "pw.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      - name: live-update
        mountPath: /live-update
{{- end }}
{{- end -}}

{{/* The live-update mount of the service's container (see pw.liveUpdateInit). */}}
{{- define "pw.liveUpdateMount" -}}
{{- $v := index .Values .Chart.Name -}}
{{- if $v.liveUpdate.enabled }}
- name: live-update
  mountPath: {{ $v.liveUpdate.path }}
{{- end }}
{{- end -}}

{{/* The live-update volume (see pw.liveUpdateInit). */}}
{{- define "pw.liveUpdateVolume" -}}
{{- $v := index .Values .Chart.Name -}}
{{- if $v.liveUpdate.enabled }}
- name: live-update
  emptyDir:
    sizeLimit: {{ $v.liveUpdate.sizeLimit }}
{{- end }}
{{- end -}}
