{{/*
Names. The fullname is <release>-pgcaravan unless the release name already
contains "pgcaravan"; objects append their component (-coordinator, -worker).
*/}}
{{- define "pgcaravan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgcaravan.fullname" -}}
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

{{- define "pgcaravan.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "ctx" $ "component" "coordinator"). */}}
{{- define "pgcaravan.labels" -}}
helm.sh/chart: {{ include "pgcaravan.chart" .ctx }}
{{ include "pgcaravan.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: pgcaravan
{{- end }}

{{- define "pgcaravan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgcaravan.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "pgcaravan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgcaravan.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgcaravan.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "pgcaravan.coordinatorName" -}}
{{- printf "%s-coordinator" (include "pgcaravan.fullname" .) }}
{{- end }}

{{- define "pgcaravan.cdcnodeName" -}}
{{- printf "%s-cdcnode" (include "pgcaravan.fullname" .) }}
{{- end }}

{{/* The address the workers and the cdcnode dial: the coordinator's Service. */}}
{{- define "pgcaravan.coordinatorAddress" -}}
{{- printf "%s:%d" (include "pgcaravan.coordinatorName" .) (int .Values.coordinator.service.grpcPort) }}
{{- end }}

{{- define "pgcaravan.databaseSecretName" -}}
{{- default (printf "%s-database" (include "pgcaravan.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{- define "pgcaravan.authSecretName" -}}
{{- default (printf "%s-auth" (include "pgcaravan.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "pgcaravan.filtersEnabled" -}}
{{- if or .Values.filters.existingConfigMap .Values.filters.content }}true{{ end }}
{{- end }}

{{- define "pgcaravan.filtersConfigMapName" -}}
{{- default (printf "%s-filters" (include "pgcaravan.fullname" .)) .Values.filters.existingConfigMap }}
{{- end }}

{{/* The connection strings, from the database Secret. */}}
{{- define "pgcaravan.databaseEnv" -}}
- name: PGCARAVAN_SOURCE_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "pgcaravan.databaseSecretName" . }}
      key: {{ .Values.database.sourceUriKey }}
- name: PGCARAVAN_TARGET_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "pgcaravan.databaseSecretName" . }}
      key: {{ .Values.database.targetUriKey }}
{{- end }}

{{- define "pgcaravan.authEnv" -}}
- name: PGCARAVAN_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "pgcaravan.authSecretName" . }}
      key: {{ .Values.auth.tokenKey }}
{{- end }}

{{/*
Flag lists, rendered as YAML list items (empty when there are none). Values
go through toYaml, so a setting like "on" or "a: b" stays one argument.
*/}}
{{- define "pgcaravan.logArgs" -}}
{{- toYaml (list (printf "--log-level=%s" .Values.migration.logLevel) (printf "--log-format=%s" .Values.migration.logFormat)) }}
{{- end }}

{{/* A live migration (coordinator and clone). */}}
{{- define "pgcaravan.followArgs" -}}
{{- $a := list }}
{{- if .Values.follow }}{{ $a = append $a "--follow" }}{{ end }}
{{- if and .Values.follow .Values.migration.replicaIdentityFull }}{{ $a = append $a "--replica-identity-full" }}{{ end }}
{{- with $a }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* What the clone creates (coordinator and clone). */}}
{{- define "pgcaravan.restoreArgs" -}}
{{- $a := list }}
{{- if .Values.migration.noOwner }}{{ $a = append $a "--no-owner" }}{{ end }}
{{- if .Values.migration.noACL }}{{ $a = append $a "--no-acl" }}{{ end }}
{{- if .Values.migration.dropIfExists }}{{ $a = append $a "--drop-if-exists" }}{{ end }}
{{- with $a }}{{ toYaml . }}{{ end }}
{{- end }}

{{- define "pgcaravan.targetSettingArgs" -}}
{{- $a := list }}
{{- range $k, $v := .Values.migration.targetSettings }}
{{- $a = append $a (printf "--target-setting=%s=%v" $k $v) }}
{{- end }}
{{- with $a }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* The data directory: the only place pgcaravan writes. */}}
{{- define "pgcaravan.dataMount" -}}
- name: data
  mountPath: /var/lib/pgcaravan
{{- end }}

{{- define "pgcaravan.filtersMount" -}}
{{- if include "pgcaravan.filtersEnabled" . -}}
- name: filters
  mountPath: /etc/pgcaravan/filters
  readOnly: true
{{- end }}
{{- end }}

{{- define "pgcaravan.filtersVolume" -}}
{{- if include "pgcaravan.filtersEnabled" . -}}
- name: filters
  configMap:
    name: {{ include "pgcaravan.filtersConfigMapName" . }}
{{- end }}
{{- end }}

{{/* The coordinator's volumes besides its PVC (empty when none). */}}
{{- define "pgcaravan.coordinatorVolumes" -}}
{{- with include "pgcaravan.filtersVolume" . }}
{{ . }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- with .Values.coordinator.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The cdcnode's volumes besides its PVC (empty when none). */}}
{{- define "pgcaravan.cdcnodeVolumes" -}}
{{- with include "pgcaravan.clientTLSVolumes" . }}
{{ . }}
{{- end }}
{{- with .Values.cdcnode.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Refuse values this version cannot honour, with a message that says what to
change. Rendered by every mode (see validate.yaml).
*/}}
{{- define "pgcaravan.validate" -}}
{{- if not (has .Values.mode (list "fleet" "job")) }}
{{- fail (printf "mode: %q is not a mode; use fleet (a coordinator and workers) or job (one pgcaravan clone Job)" .Values.mode) }}
{{- end }}
{{- if and .Values.migration.replicaIdentityFull (not .Values.follow) }}
{{- fail "migration.replicaIdentityFull changes source tables for a live migration and means nothing without follow: true; set follow: true, or leave migration.replicaIdentityFull false" }}
{{- end }}
{{- if not .Values.database.existingSecret }}
{{- if not (and .Values.database.sourceUri .Values.database.targetUri) }}
{{- fail "database: set database.existingSecret (a Secret with the keys database.sourceUriKey and database.targetUriKey), or both database.sourceUri and database.targetUri" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.mode "fleet") .Values.tls.enabled }}
{{- if not .Values.tls.existingSecret }}
{{- fail "tls.enabled: set tls.existingSecret to a Secret with tls.crt, tls.key and ca.crt for the coordinator" }}
{{- end }}
{{- if and .Values.tls.mutual (not .Values.tls.clientSecret) }}
{{- fail "tls.mutual: set tls.clientSecret to a Secret with tls.crt and tls.key for the workers and the cdcnode" }}
{{- end }}
{{- end }}
{{- if lt (int .Values.workers.jobs) 1 }}
{{- fail "workers.jobs must be at least 1" }}
{{- end }}
{{- end }}

{{/*
How a client of the coordinator (worker, cdcnode) reaches it over TLS: the
flags, the mounts and the volumes (each empty without tls.enabled).
*/}}
{{- define "pgcaravan.clientTLSArgs" -}}
{{- if .Values.tls.enabled -}}
- --tls-ca=/etc/pgcaravan/tls/ca.crt
{{- with .Values.tls.serverName }}
- --tls-server-name={{ . }}
{{- end }}
{{- if .Values.tls.mutual }}
- --tls-cert=/etc/pgcaravan/client-tls/tls.crt
- --tls-key=/etc/pgcaravan/client-tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "pgcaravan.clientTLSMounts" -}}
{{- if .Values.tls.enabled -}}
- name: tls
  mountPath: /etc/pgcaravan/tls
  readOnly: true
{{- if .Values.tls.mutual }}
- name: client-tls
  mountPath: /etc/pgcaravan/client-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "pgcaravan.clientTLSVolumes" -}}
{{- if .Values.tls.enabled -}}
# Only the CA of the coordinator's certificate, not its key.
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- if .Values.tls.mutual }}
- name: client-tls
  secret:
    secretName: {{ .Values.tls.clientSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}
