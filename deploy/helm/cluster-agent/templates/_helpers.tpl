{{- define "agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: cluster-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agent.selectorLabels" -}}
app.kubernetes.io/name: cluster-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The namespace the agent's RBAC binds (cluster_agent::rbac::NAMESPACE): project namespaces are `cp-<project>`
and project `system` is reserved, so `cp-system` is never a project's.
*/}}
{{- define "agent.namespace" -}}
{{- if ne .Release.Namespace "cp-system" }}
{{- fail (printf "install this chart into namespace cp-system (helm install -n cp-system --create-namespace), not %q: the agent's RBAC (cluster-agent/src/rbac.rs) binds its service account there, and the control plane reserves it" .Release.Namespace) }}
{{- end }}
{{- .Release.Namespace }}
{{- end }}
