//! HTML of the sandbox consent flow: just enough of a "social network" look that
//! the demo reads like a real provider, with no assets to serve.

use std::collections::HashMap;

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#eef1f6;margin:0}\
header{background:#3b5bdb;color:#fff;padding:12px 24px;font-weight:700;font-size:20px}\
main{max-width:440px;margin:40px auto;background:#fff;border-radius:10px;padding:24px;\
box-shadow:0 2px 10px rgba(0,0,0,.1)}h1{font-size:20px;margin-top:0}\
ul{padding-left:20px}li code{background:#eef1f6;padding:1px 5px;border-radius:4px}\
label{display:block;margin:12px 0 4px;font-size:14px;color:#555}\
input[type=text]{width:100%;box-sizing:border-box;padding:8px;border:1px solid #ccc;border-radius:6px}\
.buttons{display:flex;gap:12px;margin-top:20px}button{flex:1;padding:10px;border:0;\
border-radius:6px;font-size:15px;cursor:pointer}.allow{background:#3b5bdb;color:#fff}\
.deny{background:#e9ecef}.muted{color:#777;font-size:13px}.error{color:#c92a2a}";

pub(super) use crate::text::escape_html as escape;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · Sandbox Social</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <style>{STYLE}</style></head><body><header>Sandbox Social</header><main>{body}</main></body></html>",
        title = escape(title),
    )
}

/// Consent page; `params` are the validated authorize query parameters, carried
/// through as hidden fields so the POST can be checked again on its own.
pub(super) fn consent(params: &HashMap<String, String>, scopes: &[String]) -> String {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let (id, name) = match get("login_hint") {
        "" => ("demo-page", "Demo Page"),
        hint => (hint, hint),
    };
    let hidden: String = [
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .map(|k| {
        format!(
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            escape(get(k))
        )
    })
    .collect();
    let scope_items: String = if scopes.is_empty() {
        "<li class=\"muted\">no permissions</li>".to_owned()
    } else {
        scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect()
    };
    let target = url::Url::parse(get("redirect_uri"))
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let body = format!(
        "<h1><b>{app}</b> wants to access your page</h1>\
         <p>It will be able to:</p><ul>{scope_items}</ul>\
         <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
         <label for=\"account_id\">Page id</label>\
         <input type=\"text\" id=\"account_id\" name=\"account_id\" value=\"{id}\">\
         <label for=\"account_name\">Page name</label>\
         <input type=\"text\" id=\"account_name\" name=\"account_name\" value=\"{name}\">\
         <div class=\"buttons\"><button class=\"deny\" name=\"decision\" value=\"deny\">Deny</button>\
         <button class=\"allow\" name=\"decision\" value=\"allow\">Allow</button></div></form>\
         <p class=\"muted\">You will be sent back to {target}.</p>",
        app = escape(get("client_id")),
        id = escape(id),
        name = escape(name),
        target = escape(&target),
    );
    layout("Authorize", &body)
}

/// Error page for requests that must not be redirected (unknown client, bad redirect URI).
pub(super) fn error(message: &str) -> String {
    let body = format!(
        "<h1 class=\"error\">Something went wrong</h1><p>{}</p>",
        escape(message)
    );
    layout("Error", &body)
}
