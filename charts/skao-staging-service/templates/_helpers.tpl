{{/* The chart's name (app.kubernetes.io/name). */}}
{{- define "staging.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name. At most 40 characters: Knative names a
function's revisions <prefix>-<function>-00001, which must stay within 63.
*/}}
{{- define "staging.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "staging.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Kubernetes' recommended labels; pass (dict "root" $ "component" "stage"). */}}
{{- define "staging.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "staging.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skao-staging-service
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* The labels that select one component's pods (never change them: selectors are immutable). */}}
{{- define "staging.selectorLabels" -}}
app.kubernetes.io/name: {{ include "staging.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "staging.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "staging.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* An image reference from repository, tag and digest: a digest pins it. */}}
{{- define "staging.imageRef" -}}
{{- if not .repository -}}
{{- fail (printf "%s.repository is empty: the chart ships no images; push them with `make images KO_DOCKER_REPO=...` and install with `make helm-install`, which sets the repositories and digests" .key) -}}
{{- end -}}
{{- if and .digest (not (regexMatch "^sha256:[0-9a-f]{64}$" .digest)) -}}
{{- fail (printf "%s.digest %q is not sha256:<64 hex digits>" .key .digest) -}}
{{- end -}}
{{- if not (or .tag .digest) -}}
{{- fail (printf "%s: set a digest (sha256:...; make helm-install does) or at least a tag" .key) -}}
{{- end -}}
{{- .repository -}}{{- with .tag -}}:{{ . }}{{- end -}}{{- with .digest -}}@{{ . }}{{- end -}}
{{- end -}}

{{/* The functions this release runs, as a list of dicts: name, replicas, image (the reference), digest. */}}
{{- define "staging.functions" -}}
{{- $v := .Values -}}
{{- $out := list (dict "name" "stage" "replicas" $v.replicaCount "digest" $v.image.digest "image" (include "staging.imageRef" (dict "key" "image" "repository" $v.image.repository "tag" $v.image.tag "digest" $v.image.digest))) -}}
{{- range $name := list "logs" "jupyter" -}}
{{- $f := index $v.functions $name -}}
{{- if $f.enabled -}}
{{- $repo := $f.image.repository | default (and $v.image.repository (printf "%s-%s" $v.image.repository $name)) -}}
{{- /* A digest names one image: never the stage function's for another. */ -}}
{{- $ref := include "staging.imageRef" (dict "key" (printf "functions.%s.image" $name) "repository" $repo "tag" ($f.image.tag | default $v.image.tag) "digest" $f.image.digest) -}}
{{- $out = append $out (dict "name" $name "replicas" $f.replicaCount "digest" $f.image.digest "image" $ref) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The storages mounted, as a list of dicts: area, type, name, path, size, s (the values). */}}
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
{{- if and (eq $type "local") (not $s.node) -}}
{{- fail (printf "storage.%s.local.node is empty: local storage is a folder on one node; name that node (kubectl get nodes), or use nfs or ceph for a site with several nodes" $area) -}}
{{- end -}}
{{- if and (eq $type "ceph") (not $s.clusterID) -}}
{{- fail (printf "storage.%s.ceph.clusterID is empty: set the ceph-csi cluster ID (an entry of its config.json, which lists the monitors)" $area) -}}
{{- end -}}
{{- if and (eq $type "ceph") (not $s.existingSecret) (not $s.key) -}}
{{- fail (printf "storage.%s.ceph: set key (the Ceph user's key) or existingSecret (with userID and userKey)" $area) -}}
{{- end -}}
{{- $out = append $out (dict "area" $area "type" $type "name" (printf "%s-%s" (kebabcase $area) $type) "path" $s.path "size" $a.size "s" $s) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The Secret holding the functions' MySQL password (mysql.enabled). */}}
{{- define "staging.mysqlSecret" -}}
{{- .Values.mysql.existingSecret | default (printf "%s-mysql" (include "staging.fullname" .)) -}}
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

{{/*
STAGED_OWNER must be something the functions can do: they run without
CAP_CHOWN, so they may only give files their own uid and one of their groups.
*/}}
{{- define "staging.checkOwner" -}}
{{- $owner := .Values.config.stagedOwner -}}
{{- $p := .Values.podSecurityContext -}}
{{- if eq $owner "user" -}}
{{- fail "config.stagedOwner=user cannot work in the function images: they hold no site users (distroless, no /etc/passwd entries) and run without CAP_CHOWN; use the shared group (storage.group) instead" -}}
{{- else if ne $owner "none" -}}
{{- $ids := splitList ":" $owner -}}
{{- if or (ne (len $ids) 2) (not (regexMatch "^[0-9]+:[0-9]+$" $owner)) -}}
{{- fail (printf "config.stagedOwner %q is not none or <uid>:<gid>" $owner) -}}
{{- end -}}
{{- $groups := list (int $p.runAsGroup) (int .Values.storage.group) -}}
{{- range $g := $p.supplementalGroups | default list -}}
{{- $groups = append $groups (int $g) -}}
{{- end -}}
{{- $mine := and (eq (int (index $ids 0)) (int $p.runAsUser)) (has (int (index $ids 1)) $groups) -}}
{{- if and (not $mine) (ne (int $p.runAsUser) 0) -}}
{{- fail (printf "config.stagedOwner %s needs CAP_CHOWN, which a process running as uid %v does not get; give files uid %v and one of its groups, or run as root with capabilities.add [CHOWN] (README.md, Storage and permissions)" $owner $p.runAsUser $p.runAsUser) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pods' security context: podSecurityContext with storage.group added. */}}
{{- define "staging.podSecurityContext" -}}
{{- $p := deepCopy .Values.podSecurityContext -}}
{{- $groups := list -}}
{{- range $g := concat ($p.supplementalGroups | default list) (list .Values.storage.group) -}}
{{- if not (has (int $g) $groups) -}}
{{- $groups = append $groups (int $g) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $p "supplementalGroups" $groups -}}
{{- toYaml $p -}}
{{- end -}}

{{/*
Checksums that roll the pods when the settings or the Secrets' values
change. The secrets' checksum is over the values they are made from, not
over secrets.yaml, whose generated password would differ at every render.
A Secret named by existingSecret is outside the chart: restart the pods
after changing it.
*/}}
{{- define "staging.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ pick .Values "mysql" "externalDatabase" "jupyterhub" | toJson | sha256sum }}
{{- end -}}

{{/* What every function's pod spec shares besides its container. */}}
{{- define "staging.podSpec" -}}
{{- $root := .root -}}
{{- $f := .f -}}
serviceAccountName: {{ include "staging.serviceAccountName" $root }}
automountServiceAccountToken: false
securityContext:
  {{- include "staging.podSecurityContext" $root | nindent 2 }}
{{- with $root.Values.topologySpread }}
{{- if .enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .maxSkew }}
    topologyKey: {{ .topologyKey }}
    whenUnsatisfiable: {{ .whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "staging.selectorLabels" (dict "root" $root "component" $f.name) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One function's container: image, environment, probes, mounts. */}}
{{- define "staging.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $f := .f -}}
name: {{ $f.name }}
image: {{ $f.image | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
ports:
  - name: {{ if $v.knative.enabled }}http1{{ else }}http{{ end }}
    containerPort: 8080
envFrom:
  - configMapRef:
      name: {{ include "staging.fullname" $root }}-config
env:
  {{- if not $v.knative.enabled }}
  - name: PORT
    value: "8080"
  {{- end }}
  {{- if $v.mysql.enabled }}
  - name: DB_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "staging.mysqlSecret" $root }}
        key: password
  - name: DATABASE_URL
    value: {{ printf "mysql://%s:$(DB_PASSWORD)@%s-mysql:3306/%s" (urlquery $v.mysql.username) (include "staging.fullname" $root) $v.mysql.database | quote }}
  {{- else }}
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ $v.externalDatabase.existingSecret | default (printf "%s-database" (include "staging.fullname" $root)) }}
        key: {{ if $v.externalDatabase.existingSecret }}{{ $v.externalDatabase.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
  {{- end }}
  {{- if eq $f.name "jupyter" }}
  - name: JUPYTERHUB_API_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ $v.jupyterhub.existingSecret | default (printf "%s-jupyterhub" (include "staging.fullname" $root)) }}
        key: {{ if $v.jupyterhub.existingSecret }}{{ $v.jupyterhub.existingSecretKey }}{{ else }}token{{ end }}
  {{- end }}
{{- /*
/readyz says whether the function can serve (its database included);
/healthz only that the process runs, so a database outage makes pods
unready, never restarts them. On Knative the readiness probe has no
period: Knative then probes aggressively and a cold start is not held back
to the next tick.
*/}}
{{- if $v.knative.enabled }}
readinessProbe:
  httpGet:
    path: /readyz
{{- else }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  # /readyz waits up to 2 s for the database: its answer beats the timeout.
  timeoutSeconds: 3
{{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    {{- if not $v.knative.enabled }}
    port: http
    {{- end }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
resources:
  {{- toYaml $v.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
{{- if ne $f.name "logs" }}
volumeMounts:
  {{- range $s := include "staging.storages" $root | fromJsonArray }}
  - name: {{ $s.name }}
    mountPath: {{ $s.path }}
    {{- if and (eq $s.area "source") (not $v.config.enableFileCreator) }}
    readOnly: true
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* A function's volumes: one claim per mounted storage; none for logs, which reads only the store. */}}
{{- define "staging.volumes" -}}
{{- $root := .root -}}
{{- if ne .f.name "logs" }}
volumes:
{{- range $s := include "staging.storages" $root | fromJsonArray }}
  - name: {{ $s.name }}
    persistentVolumeClaim:
      claimName: {{ include "staging.fullname" $root }}-{{ $s.name }}
      {{- if and (eq $s.area "source") (not $root.Values.config.enableFileCreator) }}
      readOnly: true
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The function an ingress path goes to: its `function`, else stage. */}}
{{- define "staging.pathFunction" -}}
{{- $name := .p.function | default "stage" -}}
{{- if not (has $name (list "stage" "logs" "jupyter")) -}}
{{- fail (printf "ingress path %s: function %q is not stage, logs or jupyter" .p.path $name) -}}
{{- end -}}
{{- if and (ne $name "stage") (not (index .root.Values.functions $name).enabled) -}}
{{- fail (printf "ingress path %s goes to the %s function, but functions.%s.enabled is false" .p.path $name $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* A duration in seconds in ISO 8601, as Knative Eventing's delivery takes it. */}}
{{- define "staging.isoSeconds" -}}
PT{{ . }}S
{{- end -}}
