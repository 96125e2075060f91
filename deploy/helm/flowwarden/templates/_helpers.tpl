{{/* The labels deploy/kustomization.yaml adds to every object's metadata. */}}
{{- define "flowwarden.labels" -}}
app.kubernetes.io/name: flowwarden
app.kubernetes.io/part-of: flowwarden
{{- end }}

{{- define "flowwarden.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* A namespaceSelector + podSelector peer from {namespace, podLabels}. */}}
{{- define "flowwarden.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  podSelector:
    matchLabels:
      {{- toYaml .podLabels | nindent 6 }}
{{- end }}

{{- define "flowwarden.dsnEnv" -}}
- name: FLOWWARDEN_CLICKHOUSE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.clickhouse.secretName }}
      key: {{ .Values.clickhouse.secretKey }}
{{- end }}

{{- define "flowwarden.clickhouseArgs" -}}
{{- with .Values.clickhouse.cluster }}
- --clickhouse-cluster={{ . }}
- --clickhouse-replicated={{ $.Values.clickhouse.replicated }}
- --clickhouse-cluster-ddl={{ $.Values.clickhouse.clusterDDL }}
{{- end }}
{{- end }}
