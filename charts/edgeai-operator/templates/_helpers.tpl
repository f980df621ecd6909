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
{{- include "edgeai-operator.imageRef" (list .Values.runtimeImage .) -}}
{{- end -}}

{{/*
The operator's command line (edgeai-operator, edge_operator/main.py).
*/}}
{{- define "edgeai-operator.args" -}}
- --health-port={{ .Values.ports.health }}
- --metrics-port={{ .Values.ports.metrics }}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
- --lease-namespace=$(POD_NAMESPACE)
- --lease-name={{ include "edgeai-operator.fullname" . }}
{{- end }}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --runtime-image={{ include "edgeai-operator.runtimeImage" . }}
{{- end -}}

{{- define "edgeai-operator.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{- define "edgeai-operator.livenessPath" -}}/healthz{{- end -}}
{{- define "edgeai-operator.readinessPath" -}}/healthz{{- end -}}
