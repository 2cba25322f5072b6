package main

import (
	"context"
	"html/template"
	"net/http"
)

// loginPage is the provider's own sign-in form. The element ids are what a
// browser test fills in: username, password, submit.
var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
<form method="POST" action="/login">
<input type="hidden" name="id" value="{{.ID}}">
<p><label for="username">Username</label> <input id="username" name="username" autocomplete="username" autofocus></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password"></p>
{{if .Error}}<p id="error" role="alert">{{.Error}}</p>{{end}}
<p><button id="submit" type="submit">Sign in</button></p>
</form>
</body>
</html>
`))

// login serves the sign-in form and checks what is sent back; on success
// the browser goes on to the provider's callback, which answers the client
// with a code.
type login struct {
	s        *storage
	callback func(ctx context.Context, requestID string) string
}

func (l *login) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		l.render(w, http.StatusOK, r.URL.Query().Get("authRequestID"), "")
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "cannot parse form: "+err.Error(), http.StatusBadRequest)
			return
		}
		id := r.PostFormValue("id")
		if err := l.s.checkLogin(id, r.PostFormValue("username"), r.PostFormValue("password")); err != nil {
			l.render(w, http.StatusUnauthorized, id, err.Error())
			return
		}
		http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (l *login) render(w http.ResponseWriter, status int, id, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	loginPage.Execute(w, struct{ ID, Error string }{id, msg})
}
