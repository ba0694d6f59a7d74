{{/* The namespace of every namespaced object: namespace.name, or the release's. */}}
{{- define "leifur.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end -}}

{{/* Labels helm adds to every object's metadata (never to selectors, which cannot change). */}}
{{- define "leifur.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The labels that select one program's Pods: include "leifur.selectorLabels" "controller". */}}
{{- define "leifur.selectorLabels" -}}
app.kubernetes.io/name: leifur
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{- define "leifur.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* --load-balancer-class, for both programs. */}}
{{- define "leifur.classArgs" -}}
{{- with .Values.loadBalancerClass }}
- --load-balancer-class={{ . }}
{{- end }}
{{- end -}}

{{/* Scheduling and pulling, the same shape for both programs: (dict "root" $ "program" .Values.agent). */}}
{{- define "leifur.podScheduling" -}}
{{- with .program.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .program.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .program.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .program.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
