{{/* The Job's pod template (its hash is part of the Job's name). */}}
{{- define "pw.migrationsPod" -}}
{{- $v := .Values.migrations -}}
metadata:
  labels:
    {{- include "pw.labels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include "pw.configChecksum" . }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "pw.fullname" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "pw.podSecurityContext" . | nindent 4 }}
  containers:
    - name: flyway
      image: {{ include "pw.image" . | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      # -skipCheckForUpdate: Flyway otherwise asks the internet for a newer release on
      # every run, which the NetworkPolicy blocks (flag: flyway/flyway
      # flyway-commandline/src/main/java/org/flywaydb/commandline/CommandLineArguments.java,
      # SKIP_CHECK_FOR_UPDATE_FLAG).
      args: ["-skipCheckForUpdate", "migrate"]
      envFrom:
        - configMapRef:
            name: {{ include "pw.fullname" . }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- include "pw.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: secrets
          mountPath: /etc/pulsewatch/secrets
          readOnly: true
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 128Mi
    {{- include "pw.secretVolume" (dict "ctx" . "jwt" false) | nindent 4 }}
{{- end -}}
