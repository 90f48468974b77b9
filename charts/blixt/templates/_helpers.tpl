{{/* SPDX-License-Identifier: Apache-2.0 */}}

{{- define "blixt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix; names below append -admission, -controller, -agent (<= 63 chars). */}}
{{- define "blixt.fullname" -}}
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

{{- define "blixt.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "blixt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "blixt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blixt
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one role's pods: (dict "ctx" $ "component" "agent"). */}}
{{- define "blixt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "blixt.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "blixt.admission.name" -}}{{ include "blixt.fullname" . }}-admission{{- end }}
{{- define "blixt.controller.name" -}}{{ include "blixt.fullname" . }}-controller{{- end }}
{{- define "blixt.agent.name" -}}{{ include "blixt.fullname" . }}-agent{{- end }}

{{/* The agent selector as "k=v,k=v", for the controller (node readiness) and the uninstall job. */}}
{{- define "blixt.agent.selector" -}}
{{- $labels := include "blixt.selectorLabels" (dict "ctx" . "component" "agent") | fromYaml }}
{{- $terms := list }}
{{- range $key := keys $labels | sortAlpha }}
{{- $terms = append $terms (printf "%s=%s" $key (get $labels $key)) }}
{{- end }}
{{- join "," $terms }}
{{- end }}

{{/*
Environment every role shares: Pepr's runtime settings. Pepr serves /healthz over HTTPS on
port 3000 in every mode, with the certificate mounted at /etc/certs.
*/}}
{{- define "blixt.peprEnv" -}}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: PEPR_PRETTY_LOG
  value: "false"
- name: SSL_KEY_PATH
  value: /etc/certs/tls.key
- name: SSL_CERT_PATH
  value: /etc/certs/tls.crt
{{- end }}

{{/* Pod security for the non-root roles (admission, controller). */}}
{{- define "blixt.restrictedPodSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "blixt.restrictedContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Pepr 1.x keeps its store (PeprStore) in this namespace, whatever the release's is. */}}
{{- define "blixt.peprStoreNamespace" -}}pepr-system{{- end }}
