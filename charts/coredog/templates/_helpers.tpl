{{/*
The prefix of every object name: fullnameOverride, else the release name
when it contains "coredog", else "<release>-coredog". At most 40 characters,
so that "<prefix>-manager-metrics" is a valid Service name.
*/}}
{{- define "coredog.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "coredog" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-coredog" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "coredog.managerName" -}}
{{- include "coredog.fullname" . }}-manager
{{- end -}}

{{- define "coredog.agentName" -}}
{{- include "coredog.fullname" . }}-agent
{{- end -}}

{{- define "coredog.scraperName" -}}
{{- include "coredog.fullname" . }}-metrics-scraper
{{- end -}}

{{/*
The manager pods' affinity: .Values.affinity, plus, with
manager.avoidAgentNodes, anti-affinity to the pods of privileged agents
(coredog.io/privileged, set by the manager on Manage and Pipe agents).
*/}}
{{- define "coredog.managerAffinity" -}}
{{- $affinity := deepCopy .Values.affinity -}}
{{- with .Values.manager.avoidAgentNodes -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" "coredog-agent" "coredog.io/privileged" "true")) -}}
{{- $anti := deepCopy (get $affinity "podAntiAffinity" | default dict) -}}
{{- if eq . "Required" -}}
{{- $_ := set $anti "requiredDuringSchedulingIgnoredDuringExecution" (append (get $anti "requiredDuringSchedulingIgnoredDuringExecution" | default list) $term) -}}
{{- else -}}
{{- $_ := set $anti "preferredDuringSchedulingIgnoredDuringExecution" (append (get $anti "preferredDuringSchedulingIgnoredDuringExecution" | default list) (dict "weight" 100 "podAffinityTerm" $term)) -}}
{{- end -}}
{{- $_ := set $affinity "podAntiAffinity" $anti -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end -}}

{{/* The image of the manager and, by default, of every agent. */}}
{{- define "coredog.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "coredog.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: coredog
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coredog
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels that select the manager's pods. The agents the manager creates carry
app.kubernetes.io/name: coredog-agent, so the two never overlap.
*/}}
{{- define "coredog.managerSelectorLabels" -}}
app.kubernetes.io/name: coredog
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}
