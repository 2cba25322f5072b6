{{/* Release-wide name, at most 63 characters. */}}
{{- define "staging.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "staging.labels" -}}
app.kubernetes.io/part-of: skao-staging-service
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The functions this release runs, as a list of dicts: name, replicas, image. */}}
{{- define "staging.functions" -}}
{{- $v := .Values -}}
{{- $out := list (dict "name" "stage" "replicas" $v.replicaCount "image" (printf "%s:%s" $v.image.repository $v.image.tag)) -}}
{{- range $name := list "logs" "jupyter" -}}
{{- $f := index $v.functions $name -}}
{{- if $f.enabled -}}
{{- $repo := $f.image.repository | default (printf "%s-%s" $v.image.repository $name) -}}
{{- $out = append $out (dict "name" $name "replicas" $f.replicaCount "image" (printf "%s:%s" $repo ($f.image.tag | default $v.image.tag))) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The storages mounted, as a list of dicts: area, type, name, path, s (the values). */}}
{{- define "staging.storages" -}}
{{- $v := .Values -}}
{{- $out := list -}}
{{- range $area := list "source" "userArea" -}}
{{- $a := index $v.storage $area -}}
{{- if not (has $a.type (list "local" "nfs" "ceph")) -}}
{{- fail (printf "storage.%s.type: %q is not local, nfs or ceph" $area $a.type) -}}
{{- end -}}
{{- if not (index $a $a.type).enabled -}}
{{- fail (printf "storage.%s.type is %s but storage.%s.%s.enabled is false" $area $a.type $area $a.type) -}}
{{- end -}}
{{- range $type := list "local" "nfs" "ceph" -}}
{{- $s := index $a $type -}}
{{- if $s.enabled -}}
{{- $out = append $out (dict "area" $area "type" $type "name" (printf "%s-%s" (kebabcase $area) $type) "path" $s.path "size" $a.size "s" $s) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The Secret holding DATABASE_URL, and its key. */}}
{{- define "staging.databaseSecret" -}}
{{- if and (not .Values.mysql.enabled) .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else -}}
{{- include "staging.fullname" . }}-database
{{- end -}}
{{- end -}}
{{- define "staging.databaseSecretKey" -}}
{{- if and (not .Values.mysql.enabled) .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretKey -}}
{{- else -}}
DATABASE_URL
{{- end -}}
{{- end -}}

{{/* Where the stage function hands jupyter_copy requests. */}}
{{- define "staging.jupyterURL" -}}
{{- if .Values.functions.jupyter.enabled -}}
{{- if .Values.knative.enabled -}}
http://{{ include "staging.fullname" . }}-jupyter.{{ .Release.Namespace }}.svc.cluster.local
{{- else -}}
http://{{ include "staging.fullname" . }}-jupyter:{{ .Values.service.port }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One function's container: image, environment, probes, mounts. */}}
{{- define "staging.container" -}}
{{- $root := .root -}}
{{- $f := .f -}}
name: {{ $f.name }}
image: {{ $f.image | quote }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
ports:
  - name: {{ if $root.Values.knative.enabled }}http1{{ else }}http{{ end }}
    containerPort: 8080
envFrom:
  - configMapRef:
      name: {{ include "staging.fullname" $root }}-config
env:
  {{- if not $root.Values.knative.enabled }}
  - name: PORT
    value: "8080"
  {{- end }}
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "staging.databaseSecret" $root }}
        key: {{ include "staging.databaseSecretKey" $root }}
  {{- if eq $f.name "jupyter" }}
  - name: JUPYTERHUB_API_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ $root.Values.jupyterhub.existingSecret | default (printf "%s-jupyterhub" (include "staging.fullname" $root)) }}
        key: {{ if $root.Values.jupyterhub.existingSecret }}{{ $root.Values.jupyterhub.existingSecretKey }}{{ else }}token{{ end }}
  {{- end }}
readinessProbe:
  httpGet:
    path: /readyz
    {{- if not $root.Values.knative.enabled }}
    port: http
    {{- end }}
  periodSeconds: 5
livenessProbe:
  httpGet:
    path: /healthz
    {{- if not $root.Values.knative.enabled }}
    port: http
    {{- end }}
  periodSeconds: 10
resources:
  {{- toYaml $root.Values.resources | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  {{- range $s := include "staging.storages" $root | fromJsonArray }}
  - name: {{ $s.name }}
    mountPath: {{ $s.path }}
    {{- if and (eq $s.area "source") (not $root.Values.config.enableFileCreator) }}
    readOnly: true
    {{- end }}
  {{- end }}
{{- end -}}

{{/* The pod's volumes: one claim per mounted storage. */}}
{{- define "staging.volumes" -}}
{{- $root := . -}}
{{- range $s := include "staging.storages" $root | fromJsonArray }}
- name: {{ $s.name }}
  persistentVolumeClaim:
    claimName: {{ include "staging.fullname" $root }}-{{ $s.name }}
    {{- if and (eq $s.area "source") (not $root.Values.config.enableFileCreator) }}
    readOnly: true
    {{- end }}
{{- end }}
{{- end -}}

{{/* The function an ingress path goes to: its `function`, else logs for /logs..., else stage. */}}
{{- define "staging.pathFunction" -}}
{{- $name := .p.function | default (ternary "logs" "stage" (hasPrefix "/logs" .p.path)) -}}
{{- if not (has $name (list "stage" "logs" "jupyter")) -}}
{{- fail (printf "ingress path %s: function %q is not stage, logs or jupyter" .p.path $name) -}}
{{- end -}}
{{- if and (ne $name "stage") (not (index .root.Values.functions $name).enabled) -}}
{{- fail (printf "ingress path %s goes to the %s function, but functions.%s.enabled is false" .p.path $name $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}
