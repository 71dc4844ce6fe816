{{/* The chart name, truncated for label values. */}}
{{- define "gitgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: the release name when it already holds the chart name. */}}
{{- define "gitgate.fullname" -}}
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

{{- define "gitgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "gitgate.labels" -}}
helm.sh/chart: {{ include "gitgate.chart" . }}
{{ include "gitgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitgate
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "gitgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels that select one component's pods: `webhook` or `reconciler`. */}}
{{- define "gitgate.componentSelectorLabels" -}}
{{ include "gitgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The reconciler's ServiceAccount (the sync loop, the guard). */}}
{{- define "gitgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's ServiceAccount (admission, the secrets bridge). */}}
{{- define "gitgate.webhookServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-webhook" (include "gitgate.fullname" .)) .Values.serviceAccount.webhookName }}
{{- else }}
{{- default "default" .Values.serviceAccount.webhookName }}
{{- end }}
{{- end }}

{{/* The username the sync loop's requests carry. */}}
{{- define "gitgate.reconciler" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "gitgate.serviceAccountName" . }}
{{- end }}

{{/* Whether a client CA is mounted for /validate and /mutate. */}}
{{- define "gitgate.clientAuth" -}}
{{- if .Values.webhook.clientAuth.enabled }}true{{ end }}
{{- end }}

{{/* The Secret the serving certificate lives in. */}}
{{- define "gitgate.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "gitgate.fullname" .) }}
{{- end }}
{{- end }}

{{- define "gitgate.ageSecretName" -}}
{{- default (printf "%s-age" (include "gitgate.fullname" .)) .Values.age.existingSecret }}
{{- end }}

{{- define "gitgate.auditKeySecretName" -}}
{{- default (printf "%s-audit-key" (include "gitgate.fullname" .)) .Values.audit.signingKey.existingSecret }}
{{- end }}

{{- define "gitgate.hookSecretName" -}}
{{- default (printf "%s-hook" (include "gitgate.fullname" .)) .Values.hookSecret.existingSecret }}
{{- end }}

{{/* Whether an audit signing key is mounted. */}}
{{- define "gitgate.auditKeyMounted" -}}
{{- if or .Values.audit.signingKey.existingSecret .Values.audit.signingKey.generate }}true{{ end }}
{{- end }}

{{/* Whether an age identity is mounted. */}}
{{- define "gitgate.ageMounted" -}}
{{- if or .Values.age.existingSecret .Values.age.identity }}true{{ end }}
{{- end }}

{{/* Namespaces no webhook intercepts, as gitgate's guard lists them. */}}
{{- define "gitgate.excludedNamespaces" -}}
{{- $excluded := list "kube-system" "kube-node-lease" }}
{{- if not (has .Release.Namespace $excluded) }}
{{- $excluded = append $excluded .Release.Namespace }}
{{- end }}
{{- toJson $excluded }}
{{- end }}

{{/* Whether an allowed_signers file is mounted (git.allowedSigners). */}}
{{- define "gitgate.allowedSignersMounted" -}}
{{- if or .Values.git.allowedSigners.secret .Values.git.allowedSigners.configMap }}true{{ end }}
{{- end }}

{{/* Whether an OpenPGP keyring is mounted (git.gpgKeyring). */}}
{{- define "gitgate.gpgKeyringMounted" -}}
{{- if or .Values.git.gpgKeyring.secret .Values.git.gpgKeyring.configMap }}true{{ end }}
{{- end }}
