{{/*
Names. The release name prefixes every object, so two releases can share a namespace.
*/}}
{{- define "cp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "cp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: control-plane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Every label of one component's objects: `include "cp.componentLabels" (list $ "api")` */}}
{{- define "cp.componentLabels" -}}
{{ include "cp.labels" (index . 0) }}
app.kubernetes.io/name: {{ index . 1 }}
{{- end }}

{{/* Selector labels of one component: `include "cp.selectorLabels" (list $ "api")` */}}
{{- define "cp.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $.Release.Name }}
{{- end }}

{{/*
An image reference: `include "cp.image" (list $ "cp-api" $.Values.api.imageTag)`. The names are those
`./dev images` writes; a component's own tag (optional third item) overrides image.tag.
*/}}
{{- define "cp.image" -}}
{{- $ := index . 0 -}}
{{- $name := index . 1 -}}
{{- $tag := $.Values.image.tag | default $.Chart.AppVersion -}}
{{- if and (gt (len .) 2) (index . 2) -}}
{{- $tag = index . 2 -}}
{{- end -}}
{{- if $.Values.image.registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" $.Values.image.registry) $name $tag }}
{{- else -}}
{{ printf "%s:%s" $name $tag }}
{{- end -}}
{{- end }}

{{/*
The NATS the control plane uses: natsConnection.url, else the client Service of the vendored chart, whose
name is `nats.fullname` (charts/nats/templates/_helpers.tpl) unless `service.name` overrides it.
*/}}
{{- define "cp.natsURL" -}}
{{- if .Values.natsConnection.url -}}
{{ .Values.natsConnection.url }}
{{- else if not .Values.nats.enabled -}}
{{ fail "nats.enabled is false: set natsConnection.url to the NATS the control plane uses" }}
{{- else -}}
{{- $service := .Values.nats.service.name -}}
{{- if not $service -}}
{{- if .Values.nats.fullnameOverride -}}
{{- $service = .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "nats" .Values.nats.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- $service = .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $service = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{ printf "%s://%s.%s.svc:%d" (ternary "tls" "nats" .Values.nats.config.nats.tls.enabled) $service .Release.Namespace (int .Values.nats.config.nats.port) }}
{{- end -}}
{{- end }}

{{/* Selector of the vendored chart's NATS pods (charts/nats/templates/_helpers.tpl, nats.selectorLabels). */}}
{{- define "cp.natsSelectorLabels" -}}
app.kubernetes.io/name: {{ default "nats" .Values.nats.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end }}

{{/*
How a process reaches NATS (streams::connection::NatsArgs): the URL, the nkey seed file mounted from the
identity's Secret, and the CA when NATS' client port has a private one. `include "cp.natsEnv" (list $ "controlPlane")`
*/}}
{{- define "cp.natsEnv" -}}
{{- $ := index . 0 -}}
- name: CP_NATS_URL
  value: {{ include "cp.natsURL" $ | quote }}
- name: CP_NATS_NKEY
  value: /etc/cp/nats/nkey
{{- if $.Values.natsConnection.caSecret.name }}
- name: CP_NATS_CA
  value: /etc/cp/nats-ca/{{ $.Values.natsConnection.caSecret.key }}
{{- end }}
- name: CP_JETSTREAM_REPLICAS
  value: {{ $.Values.jetstream.replicas | quote }}
{{- end }}

{{/* Volumes for the above: `include "cp.natsVolumes" (list $ "controlPlane")` (or "admin"). */}}
{{- define "cp.natsVolumes" -}}
{{- $ := index . 0 -}}
{{- $identity := get $.Values.identities (index . 1) -}}
- name: nats-nkey
  secret:
    secretName: {{ required (printf "identities.%s.existingSecret: the Secret holding this identity's nkey seed (cp-api --write-nats-accounts makes the seeds)" (index . 1)) $identity.existingSecret | quote }}
    defaultMode: 0400
    items:
      - key: {{ $identity.key | quote }}
        path: nkey
{{- if $.Values.natsConnection.caSecret.name }}
- name: nats-ca
  secret:
    secretName: {{ $.Values.natsConnection.caSecret.name | quote }}
    items:
      - key: {{ $.Values.natsConnection.caSecret.key | quote }}
        path: {{ $.Values.natsConnection.caSecret.key | quote }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "cp.natsVolumeMounts" -}}
- name: nats-nkey
  mountPath: /etc/cp/nats
  readOnly: true
{{- if .Values.natsConnection.caSecret.name }}
- name: nats-ca
  mountPath: /etc/cp/nats-ca
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Pod-level scheduling and security shared by every component. */}}
{{- define "cp.podCommon" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
serviceAccountName: {{ include "cp.fullname" $ }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with $.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- with $component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* CP_CLUSTERS from a list of {name, region}: `name=region,…` (api/src/main.rs, --clusters). */}}
{{- define "cp.clusterList" -}}
{{- $pairs := list -}}
{{- range . -}}
{{- $pairs = append $pairs (printf "%s=%s" .name .region) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}
