{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 50 characters so that suffixes such as
"-cp-headless" and the StatefulSet's pod ordinal still fit in 63.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource names. */}}
{{- define "tollgate.cp.fullname" -}}{{ include "tollgate.fullname" . }}-cp{{- end }}
{{- define "tollgate.cp.headless" -}}{{ include "tollgate.fullname" . }}-cp-headless{{- end }}
{{- define "tollgate.dp.fullname" -}}{{ include "tollgate.fullname" . }}-dp{{- end }}
{{- define "tollgate.proxy.fullname" -}}{{ include "tollgate.fullname" . }}-proxy{{- end }}

{{/*
Common labels. Pass a dict: (dict "ctx" $ "component" "control-plane").
*/}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" .ctx }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable on StatefulSets/Deployments: never add to these).
*/}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/*
metadata.annotations from commonAnnotations merged with extra ones, as a
"\n  annotations: ..." block (nothing when empty). Use as
`  {{- include "tollgate.annotations" (dict "ctx" . "extra" ...) }}`.
*/}}
{{- define "tollgate.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.ctx.Values.commonAnnotations | default dict) }}
{{- if $all }}
{{- printf "annotations:\n%s" (toYaml $all | indent 2) | nindent 2 }}
{{- end }}
{{- end }}

{{- define "tollgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the admin and cluster tokens. */}}
{{- define "tollgate.tokensSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-tokens" (include "tollgate.fullname" .)) }}
{{- end }}

{{/* Secret holding the cluster mTLS material (tls.crt, tls.key, ca.crt). */}}
{{- define "tollgate.clusterTlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-cluster-tls" (include "tollgate.fullname" .)) }}
{{- end }}

{{/* Scheme of control-plane gRPC URLs. */}}
{{- define "tollgate.grpcScheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* <headless>.<namespace>.svc.<clusterDomain>: the domain of every control-plane pod. */}}
{{- define "tollgate.cp.domain" -}}
{{- printf "%s.%s.svc.%s" (include "tollgate.cp.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Stable admin URL of control-plane pod 0, the one that bootstraps. */}}
{{- define "tollgate.cp.seedAdminUrl" -}}
{{- printf "http://%s-0.%s:%d" (include "tollgate.cp.fullname" .) (include "tollgate.cp.domain" .) (int .Values.controlPlane.ports.admin) }}
{{- end }}

{{/* In-cluster URL of the admin Service. */}}
{{- define "tollgate.cp.adminServiceUrl" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "tollgate.cp.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.controlPlane.ports.admin) }}
{{- end }}

{{/* Comma-separated gRPC URLs of every control-plane pod, for data planes. */}}
{{- define "tollgate.cp.grpcUrls" -}}
{{- $urls := list }}
{{- range $i := until (int .Values.controlPlane.replicas) }}
{{- $urls = append $urls (printf "%s://%s-%d.%s:%d" (include "tollgate.grpcScheme" $) (include "tollgate.cp.fullname" $) $i (include "tollgate.cp.domain" $) (int $.Values.controlPlane.ports.grpc)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/*
Pod anti-affinity preset. Pass (dict "ctx" $ "component" "..." "preset" "soft|hard" "topologyKey" "...").
*/}}
{{- define "tollgate.antiAffinity" -}}
{{- if eq .preset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: {{ .topologyKey }}
      labelSelector:
        matchLabels:
          {{- include "tollgate.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 10 }}
{{- else if eq .preset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: {{ .topologyKey }}
        labelSelector:
          matchLabels:
            {{- include "tollgate.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* PDB spec body from a pdb values block (minAvailable wins over maxUnavailable). */}}
{{- define "tollgate.pdbSpec" -}}
{{- if not (kindIs "invalid" .minAvailable) -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ if kindIs "invalid" .maxUnavailable }}1{{ else }}{{ .maxUnavailable }}{{ end }}
{{- end }}
{{- end }}

{{/*
A Secret data value, kept across upgrades: the given value if set, else the
value already in the cluster's Secret (lookup; empty under `helm template`),
else a fresh random one. Returns the base64-encoded value.
Pass (dict "ctx" $ "secret" NAME "key" KEY "value" GIVEN).
*/}}
{{- define "tollgate.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if .value }}
{{- .value | b64enc }}
{{- else if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum 40 | b64enc }}
{{- end }}
{{- end }}

{{/* Checksum of the user-set secret inputs, to roll pods when they change. */}}
{{- define "tollgate.secretsChecksum" -}}
{{- dict "auth" .Values.auth "tls" .Values.tls "proxyTls" .Values.proxy.tls | toJson | sha256sum }}
{{- end }}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "tollgate.validate" -}}
{{- if and .Values.proxy.tls.enabled (not .Values.proxy.tls.secretName) }}
{{- fail "proxy.tls.enabled requires proxy.tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.autoGenerate) }}
{{- fail "tls.enabled requires tls.existingSecret or tls.autoGenerate=true" }}
{{- end }}
{{- if and .Values.config .Values.existingConfigSecret }}
{{- fail "set either config or existingConfigSecret, not both" }}
{{- end }}
{{- if and .Values.dataPlane.autoscaling.enabled (lt (int .Values.dataPlane.autoscaling.maxReplicas) (int .Values.dataPlane.autoscaling.minReplicas)) }}
{{- fail "dataPlane.autoscaling.maxReplicas must be >= minReplicas" }}
{{- end }}
{{- if and .Values.dataPlane.autoscaling.enabled (kindIs "invalid" .Values.dataPlane.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.dataPlane.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "dataPlane.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}

{{/* Security context of containers, shared by every workload. */}}
{{- define "tollgate.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
The declarative config as one multi-document YAML text: `config` as given
when it is a string, else each list item rendered as one document.
*/}}
{{- define "tollgate.configText" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config }}
{{- else }}
{{- range $i, $doc := .Values.config }}
{{- if $i }}
---
{{ end }}
{{- toYaml $doc }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the apply Job runs. */}}
{{- define "tollgate.hasConfig" -}}
{{- if or .Values.config .Values.existingConfigSecret }}true{{ end }}
{{- end }}
