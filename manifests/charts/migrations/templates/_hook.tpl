{{/*
Hook annotations for the migrations objects. With migrations.hook.enabled (helm-managed
envs) the Job runs as a pre-install/pre-upgrade hook; the objects it needs (ServiceAccount,
ConfigMap, NetworkPolicy) become hooks too, with a lower weight, because Helm creates hooks
before the release's ordinary objects.
Usage: include "pw.migrationsHook" (dict "ctx" . "weight" <int offset>)
*/}}
{{- define "pw.migrationsHook" -}}
{{- $h := .ctx.Values.migrations.hook -}}
{{- if $h.enabled -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ add ($h.weight | default 0) .weight | toString | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}
{{- end -}}

{{/* Job name suffix: the image digest (first 12 hex) or the tag, made DNS-safe. */}}
{{- define "pw.migrationsSuffix" -}}
{{- $img := .Values.migrations.image -}}
{{- if $img.digest -}}
{{- $img.digest | trimPrefix "sha256:" | trunc 12 -}}
{{- else -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower $img.tag) "-" | trimAll "-" | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
