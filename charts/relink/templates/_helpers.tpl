{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "relink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: <release>-relink, or <release> when it already says relink. */}}
{{- define "relink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "relink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "relink.labels" -}}
helm.sh/chart: {{ include "relink.chart" . }}
{{ include "relink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relink
{{- end }}

{{- define "relink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "relink.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the operator watches listed namespaces (Roles/RoleBindings instead of a ClusterRole). */}}
{{- define "relink.namespaced" -}}
{{- if or .Values.rbac.namespaced .Values.watchNamespace .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The namespaces a namespace-scoped install watches, comma-separated: watchNamespaces, else
watchNamespace, else the release namespace. */}}
{{- define "relink.watchNamespace" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else }}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}
{{- end }}

{{/* Host of the public callback: callback.ingress.host, else the host of publicUrl. */}}
{{- define "relink.callbackHost" -}}
{{- if .Values.callback.ingress.host }}
{{- .Values.callback.ingress.host }}
{{- else if .Values.publicUrl }}
{{- regexReplaceAll ":[0-9]+$" (urlParse .Values.publicUrl).host "" }}
{{- end }}
{{- end }}
