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

{{/*
A user name or password percent-encoded for a URL's userinfo: every byte but
A-Z a-z 0-9 - . _ ~ as %XX. urlquery writes a space as "+", which is a "+"
in userinfo: it is written %20 instead (a "+" of the text is already %2B).
*/}}
{{- define "staging.urlEscape" -}}
{{- urlquery . | replace "+" "%20" -}}
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
checksum/secrets: {{ dict "v" (pick .Values "mysql" "externalDatabase" "jupyterhub") "events" .Values.config.events | toJson | sha256sum }}
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
  {{- /*
  The password as DATABASE_URL takes it: the chart's Secret holds it
  percent-encoded (url-password); an existingSecret's password goes in as it
  is, so it must be URL-safe (the chart's README, mysql.existingSecret).
  */}}
  - name: DB_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "staging.mysqlSecret" $root }}
        key: {{ if $v.mysql.existingSecret }}password{{ else }}url-password{{ end }}
  - name: DATABASE_URL
    value: {{ printf "mysql://%s:$(DB_PASSWORD)@%s-mysql:3306/%s" (include "staging.urlEscape" $v.mysql.username) (include "staging.fullname" $root) $v.mysql.database | quote }}
  {{- else }}
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ $v.externalDatabase.existingSecret | default (printf "%s-database" (include "staging.fullname" $root)) }}
        key: {{ if $v.externalDatabase.existingSecret }}{{ $v.externalDatabase.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
  {{- end }}
  {{- if and (eq $f.name "logs") (eq $v.config.events.auth "hmac") }}
  # The logs function neither takes nor sends events: it does not get the
  # events' secret (EVENT_AUTH's checks never run there).
  - name: EVENT_HMAC_SECRET_FILE
    value: ""
  {{- end }}
  {{- if and (ne $f.name "logs") (eq $v.config.events.auth "oidc") }}
  # This function's audience: the one its Triggers name (eventing.yaml).
  - name: EVENT_OIDC_AUDIENCE
    value: {{ include "staging.eventAudience" (dict "root" $root "f" $f.name) | quote }}
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
  {{- if eq $v.config.events.auth "hmac" }}
  # EVENT_HMAC_SECRET_FILE: the secret that signs and verifies events.
  - name: event-secret
    mountPath: {{ include "staging.eventSecretDir" . }}
    readOnly: true
  {{- else if eq $v.config.events.auth "oidc" }}
  # EVENT_TOKEN_FILE: a token for the Broker's audience, which this
  # function's own events carry; and the pod's API token and the cluster's
  # CA, with which it reads the issuer's keys from the API server.
  - name: broker-token
    mountPath: {{ include "staging.brokerTokenDir" . }}
    readOnly: true
  - name: api-access
    mountPath: /var/run/secrets/kubernetes.io/serviceaccount
    readOnly: true
  {{- end }}
{{- end }}
{{- end -}}

{{/* A function's volumes: one claim per mounted storage and the events' credentials; none for logs, which reads only the store. */}}
{{- define "staging.volumes" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
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
{{- if eq $v.config.events.auth "hmac" }}
  - name: event-secret
    secret:
      secretName: {{ include "staging.eventSecret" $root }}
      items:
        - key: {{ if $v.config.events.existingSecret }}{{ $v.config.events.existingSecretKey }}{{ else }}hmac-secret{{ end }}
          path: hmac-secret
{{- else if eq $v.config.events.auth "oidc" }}
  - name: broker-token
    projected:
      sources:
        - serviceAccountToken:
            audience: {{ include "staging.brokerAudience" $root }}
            expirationSeconds: 3600
            path: token
  - name: api-access
    projected:
      sources:
        - serviceAccountToken:
            expirationSeconds: 3600
            path: token
        - configMap:
            name: kube-root-ca.crt
            items:
              - key: ca.crt
                path: ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* Where the events' secret and the Broker's token are mounted. */}}
{{- define "staging.eventSecretDir" -}}/etc/skao-staging/events{{- end -}}
{{- define "staging.brokerTokenDir" -}}/var/run/skao-staging/broker{{- end -}}

{{/* The Secret holding the events' HMAC secret (config.events.auth=hmac). */}}
{{- define "staging.eventSecret" -}}
{{- .Values.config.events.existingSecret | default (printf "%s-events" (include "staging.fullname" .)) -}}
{{- end -}}

{{/*
The Broker's OIDC audience, as Knative Eventing names it
(<group>/<kind>/<namespace>/<name>, lower case): what the functions' tokens
for K_SINK carry.
*/}}
{{- define "staging.brokerAudience" -}}
{{- printf "eventing.knative.dev/broker/%s/%s" .Release.Namespace (include "staging.fullname" .) | lower -}}
{{- end -}}

{{/*
A function's audience for events (EVENT_OIDC_AUDIENCE), which its Triggers
name as their subscriber's: in Eventing's form for its Knative Service; the
jupyter function's is the Broker's, because it also takes the stage
function's hand-offs, which carry the one token the functions hold (for
the Broker). Pass (dict "root" $ "f" "stage").
*/}}
{{- define "staging.eventAudience" -}}
{{- if eq .f "jupyter" -}}
{{- include "staging.brokerAudience" .root -}}
{{- else -}}
{{- printf "serving.knative.dev/service/%s/%s-%s" .root.Release.Namespace (include "staging.fullname" .root) .f | lower -}}
{{- end -}}
{{- end -}}

{{/*
A Trigger's name, pass (dict "root" $ "t" "copy"; t at most 7 characters):
at most 29 characters,
so that the OIDC service account Knative Eventing makes for it,
<name>-oidc-eventing.knative.dev-trigger, stays within 63 characters and is
not shortened with a hash (which EVENT_SENDERS could not name). A longer
<fullname>-<t> keeps the start of the fullname and a hash of all of it.
*/}}
{{- define "staging.triggerName" -}}
{{- $fullname := include "staging.fullname" .root -}}
{{- $name := printf "%s-%s" $fullname .t -}}
{{- if gt (len $name) 29 -}}
{{- /* 29 - 8 (the hash) - 2 (dashes) - 7 (the longest suffix, symlink, jupyter) */ -}}
{{- $name = printf "%s-%s-%s" ($fullname | trunc 12 | trimSuffix "-") (sha256sum $fullname | trunc 8) .t -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The Triggers, as a list of [name suffix, function, stagingmethod ("" for Rucio's transfer-done)]. */}}
{{- define "staging.triggers" -}}
{{- $triggers := list (list "copy" "stage" "local_copy") (list "symlink" "stage" "local_symlink") -}}
{{- if .Values.functions.jupyter.enabled -}}
{{- $triggers = append $triggers (list "jupyter" "jupyter" "jupyter_copy") -}}
{{- end -}}
{{- $triggers = append $triggers (list "rucio" "stage" "") -}}
{{- toJson $triggers -}}
{{- end -}}

{{/*
EVENT_SENDERS with config.events.auth=oidc: config.events.senders, else who
sends the events the functions take: the Triggers, with the service
accounts Eventing makes for them, and the functions' own (the stage
function's hand-offs of jupyter_copy).
*/}}
{{- define "staging.eventSenders" -}}
{{- $v := .Values -}}
{{- if or $v.config.events.senders (ne $v.config.events.auth "oidc") -}}
{{- $v.config.events.senders -}}
{{- else -}}
{{- $root := . -}}
{{- $sa := printf "system:serviceaccount:%s:" .Release.Namespace -}}
{{- $requests := list -}}
{{- $rucio := list -}}
{{- range $t := include "staging.triggers" . | fromJsonArray -}}
{{- $sub := printf "%s%s-oidc-eventing.knative.dev-trigger" $sa (include "staging.triggerName" (dict "root" $root "t" (index $t 0))) -}}
{{- if index $t 2 -}}
{{- $requests = append $requests $sub -}}
{{- else -}}
{{- $rucio = append $rucio $sub -}}
{{- end -}}
{{- end -}}
{{- $requests = append $requests (printf "%s%s" $sa (include "staging.serviceAccountName" .)) -}}
{{- printf "org.skao.staging.request=%s;io.rucio.transfer-done=%s" (join "," $requests) (join "," $rucio) -}}
{{- end -}}
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

{{/*
config.authMode and logging.level must be what the functions start with:
oidc needs its issuer and audience, and the level is one they know.
*/}}
{{- define "staging.checkConfig" -}}
{{- $c := .Values.config -}}
{{- if and (eq $c.authMode "oidc") (not (and $c.oidc.issuerURL $c.oidc.audience)) -}}
{{- fail "config.authMode=oidc needs config.oidc.issuerURL and config.oidc.audience (the site's identity provider and the audience its access tokens carry for this service)" -}}
{{- end -}}
{{- if not (has (upper (trim (toString .Values.logging.level))) (list "DEBUG" "INFO" "WARNING" "WARN" "ERROR" "CRITICAL")) -}}
{{- fail (printf "logging.level %q is not one of DEBUG, INFO, WARNING, ERROR" .Values.logging.level) -}}
{{- end -}}
{{- end -}}

{{/*
MAX_LOG_STREAMS. On Knative each followed log stream holds one of the logs
function's containerConcurrency slots, and Knative queues what finds none:
the streams must stay below it, leaving slots for page reads, so that the
503 beyond MAX_LOG_STREAMS and the 429 beyond a quarter of it for one user
are answered at all. config.maxLogStreams 0: four fifths of
knative.containerConcurrency.logs on Knative (40 of 50), the code's 1000
with Deployments (no such slots).
*/}}
{{- define "staging.maxLogStreams" -}}
{{- $v := .Values -}}
{{- $n := int $v.config.maxLogStreams -}}
{{- if $v.knative.enabled -}}
{{- $cc := int $v.knative.containerConcurrency.logs -}}
{{- if not $n -}}
{{- $n = int (sub $cc (max 1 (div $cc 5))) -}}
{{- end -}}
{{- if $v.functions.logs.enabled -}}
{{- if lt $n 1 -}}
{{- fail (printf "knative.containerConcurrency.logs %d leaves no slot for a followed log stream besides page reads: set it to at least 2" $cc) -}}
{{- else if ge $n $cc -}}
{{- fail (printf "config.maxLogStreams %d is not below knative.containerConcurrency.logs %d: each followed log stream holds one of the logs function's slots, so the streams would take them all and other callers' /logs would wait at Knative instead of being answered (503 beyond MAX_LOG_STREAMS, 429 beyond a quarter of it for one user); set it lower, or 0 for four fifths of containerConcurrency.logs" $n $cc) -}}
{{- end -}}
{{- end -}}
{{- else if not $n -}}
{{- $n = 1000 -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
config.events must be something the functions and the cluster can do: oidc
is Knative Eventing's sender identity (a Broker and Triggers); an HMAC
secret has at least 32 bytes a line.
*/}}
{{- define "staging.checkEvents" -}}
{{- $e := .Values.config.events -}}
{{- if and (eq $e.auth "oidc") (not (and .Values.knative.enabled .Values.knative.eventing.enabled)) -}}
{{- fail "config.events.auth=oidc is Knative Eventing's sender identity: it needs knative.enabled and knative.eventing.enabled; use hmac otherwise" -}}
{{- end -}}
{{- if and .Values.knative.enabled .Values.knative.eventing.enabled (ne .Values.config.authMode "none") (eq $e.auth "none") -}}
{{- fail (printf "config.events.auth=none with config.authMode=%s: async requests handed on through the broker must prove who sent them; set config.events.auth to hmac or oidc" .Values.config.authMode) -}}
{{- end -}}
{{- if and (eq $e.auth "hmac") $e.hmacSecret -}}
{{- range $line := splitList "\n" $e.hmacSecret -}}
{{- if and (trim $line) (lt (len (trim $line)) 32) -}}
{{- fail (printf "config.events.hmacSecret: a secret of %d bytes; at least 32 are required (e.g. openssl rand -hex 32)" (len (trim $line))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
