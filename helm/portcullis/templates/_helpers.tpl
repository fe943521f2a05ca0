{{/* The chart name, 63 characters at most. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name when it already contains the chart name. */}}
{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* true when the pods hold ports of their node (hostNetwork or hostPort). */}}
{{- define "portcullis.hostPorts" -}}
{{- if or .Values.network.hostNetwork .Values.network.hostPort -}}true{{- end -}}
{{- end -}}

{{/* Does the chart publish its own Service's addresses (--publish-service)? */}}
{{- define "portcullis.publishService" -}}
{{- if and .Values.service.enabled .Values.service.publish -}}true{{- end -}}
{{- end -}}

{{/* The namespaces watched, in order, each once. */}}
{{- define "portcullis.watchNamespaces" -}}
{{- uniq .Values.watchNamespaces | toJson -}}
{{- end -}}

{{/*
Checks that values which the schema cannot relate to each other make sense; the render fails with a message
naming the values to change.
*/}}
{{- define "portcullis.validate" -}}
{{- $v := .Values -}}
{{- $surge := toString $v.updateStrategy.maxSurge -}}
{{- $unavailable := toString $v.updateStrategy.maxUnavailable -}}
{{- if and (include "portcullis.hostPorts" .) (not (has $surge (list "0" "0%"))) -}}
{{- fail (printf "updateStrategy.maxSurge is %s, but the pods use host ports (network.hostNetwork or network.hostPort): a surge pod cannot bind the ports its predecessor holds on the same node. Set updateStrategy.maxSurge: 0." $surge) -}}
{{- end -}}
{{- if has $unavailable (list "0" "0%") -}}
{{- fail "updateStrategy.maxUnavailable must be at least 1 (or a percentage above 0%): with no surge, 0 would never replace a pod." -}}
{{- end -}}
{{- if and $v.network.hostNetwork $v.network.hostPort -}}
{{- fail "network.hostNetwork and network.hostPort are exclusive: with hostNetwork the pod already binds the node's ports; set network.hostPort: false." -}}
{{- end -}}
{{- $drain := add $v.drain.shutdownDelaySeconds $v.drain.shutdownGraceSeconds -}}
{{- if le (int $v.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drain.shutdownDelaySeconds + drain.shutdownGraceSeconds (%d), or the kubelet kills the pod before its connections have finished." (int $v.terminationGracePeriodSeconds) (int $drain)) -}}
{{- end -}}
{{- if and (eq $v.rbac.scope "namespace") (empty $v.watchNamespaces) -}}
{{- fail "rbac.scope: namespace needs watchNamespaces (the namespaces to watch and grant Roles in)." -}}
{{- end -}}
{{- if and $v.podDisruptionBudget.enabled (eq $v.kind "DaemonSet") -}}
{{- fail "podDisruptionBudget.enabled is for kind: Deployment; kubectl drain leaves DaemonSet pods alone, so a PDB there only blocks evictions it cannot protect against." -}}
{{- end -}}
{{- if and (include "portcullis.publishService" .) $v.publishStatusAddresses -}}
{{- fail "service.publish and publishStatusAddresses are exclusive: set service.publish: false to publish fixed addresses." -}}
{{- end -}}
{{- $ports := list (list "ports.http" $v.ports.http "http") (list "ports.https" $v.ports.https "https") (list "health.port" $v.health.port "health") -}}
{{- range $v.listenerPorts -}}
{{- $ports = append $ports (list (printf "listenerPorts %s" .name) .port .name) -}}
{{- end -}}
{{- $seen := dict -}}
{{- $names := dict -}}
{{- range $ports -}}
{{- $key := toString (index . 1) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "%s and %s both use port %s; every port must differ." (get $seen $key) (index . 0) $key) -}}
{{- end -}}
{{- $_ := set $seen $key (index . 0) -}}
{{- if hasKey $names (index . 2) -}}
{{- fail (printf "%s: the port name %s is taken; names must differ (http, https and health are the chart's)." (index . 0) (index . 2)) -}}
{{- end -}}
{{- $_ := set $names (index . 2) true -}}
{{- end -}}
{{- end -}}
