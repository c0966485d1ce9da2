{{/*
Shared helpers for the PulseWatch charts.

This file is identical in every chart under manifests/charts/ (scripts/validate-manifests
fails when the copies drift). Each chart reads its settings from the section named after
the chart (`.Values.api`, `.Values.worker`, ...) plus `.Values.global`, so one env file
keyed by chart name (manifests/envs/<env>/values.yaml) serves as `-f` for every chart.
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
