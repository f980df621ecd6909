{{/* Names, labels and images shared by every template. */}}

{{- define "edgeai-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's object name. A release called "edgeai-operator" gets plain
"edgeai-operator", not "edgeai-operator-edgeai-operator".
*/}}
{{- define "edgeai-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "edgeai-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgeai-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgeai-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgeai-operator.labels" -}}
helm.sh/chart: {{ include "edgeai-operator.chart" . }}
{{ include "edgeai-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: edgeai
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "edgeai-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "edgeai-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; the tag defaults to the chart's appVersion, a digest pins it. */}}
{{- define "edgeai-operator.imageRef" -}}
{{- $img := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- $tag := default $ctx.Chart.AppVersion $img.tag -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $img.repository $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "edgeai-operator.image" -}}
{{- include "edgeai-operator.imageRef" (list .Values.image .) -}}
{{- end -}}

{{- define "edgeai-operator.runtimeImage" -}}
{{- include "edgeai-operator.imageRef" (list .Values.runtime.images.cpu .) -}}
{{- end -}}

{{/*
The operator's command line: edgeai-operator (operator/edge_operator/controller/config.py).
*/}}
{{- define "edgeai-operator.args" -}}
- --metrics-bind=0.0.0.0:{{ .Values.port }}
- --log-level={{ .Values.logLevel }}
{{- with .Values.operator.workers }}
- --workers={{ . }}
{{- end }}
{{- with .Values.operator.verifyWorkers }}
- --verify-workers={{ . }}
{{- end }}
{{- with .Values.operator.resyncSeconds }}
- --resync-seconds={{ . }}
{{- end }}
{{- with .Values.operator.heartbeatResolutionSeconds }}
- --heartbeat-resolution={{ . }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
- --namespace=$(POD_NAMESPACE)
- --identity=$(POD_NAME)
{{- else }}
- --no-leader-election
{{- end }}
{{- end -}}

{{- define "edgeai-operator.env" -}}
# the Lease identity and namespace (leader election)
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# the image of the model-server Pods the operator creates on edge nodes, per provider family
- name: EDGEAI_RUNTIME_IMAGE
  value: {{ include "edgeai-operator.runtimeImage" . | quote }}
{{- range $family, $img := .Values.runtime.images }}
{{- if ne $family "cpu" }}
- name: EDGEAI_RUNTIME_IMAGE_{{ upper $family }}
  value: {{ include "edgeai-operator.imageRef" (list $img $) | quote }}
{{- end }}
{{- end }}
{{- with .Values.verification.maxModelBytes }}
- name: EDGEAI_MAX_MODEL_BYTES
  value: {{ . | int64 | quote }}
{{- end }}
{{- with .Values.verification.inspectMaxBytes }}
- name: EDGEAI_INSPECT_MAX_BYTES
  value: {{ . | int64 | quote }}
{{- end }}
{{- end -}}
