//! Engine tests: the shipped rules against requests, and the scoring, paranoia, mode and
//! exception policies against small rule sets. Each bypass class has a regression test.

use std::path::Path;

use super::{
    engine::{Engine, Verdict},
    request::parse_raw_request,
    rules::load_texts,
};
use crate::config::{env::Overrides, Config};

fn config(mode: &str, rules_extra: &str) -> Config {
    let text = format!("waf:\n  mode: {mode}\n  rules:\n    anomaly_threshold: 5\n{rules_extra}");
    Config::from_yaml(&text, &Overrides::none()).expect("test configuration must load")
}

fn shipped(mode: &str) -> Engine {
    let mut c = config(mode, "");
    c.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    Engine::from_config(&c).expect("shipped rules must compile")
}

fn custom(mode: &str, rules_extra: &str, rules: &str) -> Engine {
    let set = load_texts([("test.yaml", rules)]).expect("test rules must load");
    Engine::new(&config(mode, rules_extra), set).expect("test rules must compile")
}

fn verdict(engine: &Engine, raw: &[u8]) -> (Verdict, Vec<String>) {
    let req = parse_raw_request(raw).expect("test request must parse");
    let i = engine.inspect(&req);
    (
        i.verdict,
        i.matches.iter().map(|m| m.rule_id.clone()).collect(),
    )
}

fn assert_blocked(engine: &Engine, raw: &[u8], rule: &str) {
    let (v, ids) = verdict(engine, raw);
    assert_eq!(
        v,
        Verdict::Block,
        "request must be blocked; matches {ids:?}"
    );
    assert!(
        ids.iter().any(|i| i == rule),
        "{rule} must match; matches {ids:?}"
    );
}

#[test]
fn benign_request_passes_without_matches() {
    let e = shipped("blocking");
    let (v, ids) = verdict(
        &e,
        b"GET /api/messages?page=2&sort=date&q=hello+world HTTP/1.1\r\nHost: a\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,*/*;q=0.8\r\n\r\n",
    );
    assert_eq!((v, ids), (Verdict::Pass, vec![]));
}

#[test]
fn union_select_in_query_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /p?id=1%20UNION%20SELECT%20password%20FROM%20users HTTP/1.1\r\n\r\n",
        "sqli-101",
    );
}

#[test]
fn libinjection_catches_tautology_in_json() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /login HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"user\":\"admin' OR '1'='1\"}",
        "sqli-libinjection",
    );
}

#[test]
fn double_encoded_traversal_is_decoded_and_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /static/%252e%252e%252f%252e%252e%252fetc%252fpasswd HTTP/1.1\r\n\r\n",
        "pt-102",
    );
}

#[test]
fn overlong_utf8_traversal_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /files?name=%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd HTTP/1.1\r\n\r\n",
        "pt-101",
    );
}

#[test]
fn content_type_confusion_does_not_skip_the_body() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /api HTTP/1.1\r\nContent-Type: image/png\r\n\r\n{\"q\":\"1 union select 1,2\"}",
        "sqli-101",
    );
    assert_blocked(
        &shipped("blocking"),
        b"POST /api HTTP/1.1\r\n\r\nname=<script>alert(1)</script>",
        "xss-101",
    );
}

#[test]
fn multipart_boundary_trick_is_rejected() {
    let (v, ids) = verdict(
        &shipped("blocking"),
        b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=a; boundary=b\r\n\r\n\
--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1 union select 1\r\n--b--\r\n",
    );
    assert_eq!(
        v,
        Verdict::Reject,
        "ambiguous multipart must be refused; matches {ids:?}"
    );
    assert!(
        ids.contains(&"proto-multipart".to_owned()),
        "matches {ids:?}"
    );
}

#[test]
fn multipart_field_payload_is_inspected() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=zz\r\n\r\n\
--zz\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n<script>alert(1)</script>\r\n--zz--\r\n",
        "xss-101",
    );
}

#[test]
fn path_tricks_with_semicolons_and_backslashes_are_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /app/..;/..;/..\\..\\etc/passwd HTTP/1.1\r\n\r\n",
        "pt-path-escape",
    );
}

#[test]
fn payload_padded_past_a_window_is_still_found() {
    let mut raw =
        b"POST /form HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\npad="
            .to_vec();
    raw.extend(std::iter::repeat_n(b'a', 200_000));
    raw.extend_from_slice(b"&q=1%27%20or%20%271%27%3D%271");
    assert_blocked(&shipped("blocking"), &raw, "sqli-libinjection");
}

#[test]
fn the_guides_example_rules_load_and_fire_as_written() {
    let mut c = config("blocking", "    dir: rules/examples\n");
    c.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let e = Engine::from_config(&c).expect("the guide's example rules must compile");
    let (v, ids) = verdict(&e, b"GET /x?a=1;2 HTTP/1.1\r\n\r\n");
    assert_eq!((v, ids), (Verdict::Block, vec!["sqli-001".to_owned()]));
    let (_, ids) = verdict(&e, b"GET /x?a=../../etc HTTP/1.1\r\n\r\n");
    assert!(ids.contains(&"pt-001".to_owned()), "matches {ids:?}");
}

#[test]
fn monitor_mode_reports_without_blocking() {
    let (v, ids) = verdict(
        &shipped("monitor"),
        b"GET /p?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\n\r\n",
    );
    assert_eq!(v, Verdict::Monitor);
    assert!(ids.contains(&"xss-101".to_owned()), "matches {ids:?}");
}

#[test]
fn sanitize_mode_rewrites_xss_arguments() {
    let e = shipped("sanitize");
    let req = parse_raw_request(b"GET /p?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\n\r\n")
        .expect("test request must parse");
    let i = e.inspect(&req);
    assert_eq!(i.verdict, Verdict::Sanitize);
    assert_eq!(
        i.sanitize_args,
        vec![(
            "q".to_owned(),
            super::sanitize::Strategy::StripTagsAndEscape
        )],
        "the argument to sanitise is named once, with the shipped rules' strategy"
    );
}

const SCORED: &str = "waf.rules.sql_injection:\n  - id: a\n    pattern: alpha\n    score: 3\n  \
- id: b\n    pattern: beta\n    score: 3\n  - id: c\n    pattern: gamma\n    paranoia_level: 2\n  \
- id: d\n    pattern: delta\n    action: monitor\n";

#[test]
fn scores_add_up_to_the_threshold() {
    let e = custom("blocking", "", SCORED);
    assert_eq!(
        verdict(&e, b"GET /?x=alpha HTTP/1.1\r\n\r\n").0,
        Verdict::Monitor
    );
    assert_eq!(
        verdict(&e, b"GET /?x=alpha&y=beta HTTP/1.1\r\n\r\n").0,
        Verdict::Block
    );
}

#[test]
fn transforms_run_in_the_order_the_rule_writes_them() {
    // `union /**/ select`: comments removed, then whitespace compressed, gives
    // `union select`; the other order leaves two spaces.
    let rules = "waf.rules.sql_injection:\n  - id: ordered\n    pattern: 'union select'\n    \
                 score: 5\n    transforms: [remove_comments, compress_whitespace]\n  \
                 - id: reversed\n    pattern: 'union select'\n    score: 5\n    \
                 transforms: [compress_whitespace, remove_comments]\n";
    let e = custom("blocking", "", rules);
    let (v, ids) = verdict(&e, b"GET /?q=union%20/**/%20select HTTP/1.1\r\n\r\n");
    assert_eq!(v, Verdict::Block);
    assert_eq!(ids, vec!["ordered".to_owned()]);
}

#[test]
fn paranoia_level_gates_rules() {
    let pl1 = custom("blocking", "", SCORED);
    assert_eq!(
        verdict(&pl1, b"GET /?x=gamma HTTP/1.1\r\n\r\n").0,
        Verdict::Pass
    );
    let pl2 = custom("blocking", "    paranoia_level: 2\n", SCORED);
    assert_eq!(
        verdict(&pl2, b"GET /?x=gamma HTTP/1.1\r\n\r\n").0,
        Verdict::Block
    );
}

#[test]
fn rule_action_overrides_the_mode() {
    let e = custom("blocking", "", SCORED);
    assert_eq!(
        verdict(&e, b"GET /?x=delta HTTP/1.1\r\n\r\n"),
        (Verdict::Monitor, vec!["d".to_owned()])
    );
}

#[test]
fn disabled_category_does_not_run() {
    let e = custom(
        "blocking",
        "    sql_injection:\n      enabled: false\n",
        SCORED,
    );
    assert_eq!(
        verdict(&e, b"GET /?x=gamma&y=alpha%20beta HTTP/1.1\r\n\r\n").0,
        Verdict::Pass
    );
}

#[test]
fn exception_lifts_a_rule_for_its_scope_only() {
    let rules =
        "waf.rules.xss:\n  - id: x1\n    pattern: '<b>'\nwaf.exceptions:\n  - rule_id: x1\n    \
path: /cms/\n    parameter: body\n    expires: 2999-01-01\n    reason: editor posts markup\n";
    let e = custom("blocking", "", rules);
    assert_eq!(
        verdict(&e, b"GET /cms/save?body=%3Cb%3E HTTP/1.1\r\n\r\n").0,
        Verdict::Pass
    );
    assert_eq!(
        verdict(&e, b"GET /cms/save?title=%3Cb%3E HTTP/1.1\r\n\r\n").0,
        Verdict::Block
    );
    assert_eq!(
        verdict(&e, b"GET /app?body=%3Cb%3E HTTP/1.1\r\n\r\n").0,
        Verdict::Block
    );
}

#[test]
fn expired_exception_does_not_apply() {
    let rules =
        "waf.rules.xss:\n  - id: x1\n    pattern: '<b>'\nwaf.exceptions:\n  - rule_id: x1\n    \
path: /\n    expires: 2001-01-01\n";
    let e = custom("blocking", "", rules);
    assert_eq!(
        verdict(&e, b"GET /?a=%3Cb%3E HTTP/1.1\r\n\r\n").0,
        Verdict::Block
    );
}

#[test]
fn built_in_rules_are_every_file_of_the_rules_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("rules dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    let built_in: Vec<String> = crate::inspect::engine::SHIPPED_RULES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(
        built_in, on_disk,
        "SHIPPED_RULES must list config/rules/*.yaml"
    );
    for (name, text) in crate::inspect::engine::SHIPPED_RULES {
        let from_disk = std::fs::read_to_string(dir.join(name)).expect("readable");
        assert_eq!(*text, from_disk, "{name}");
    }
}

#[test]
fn fullwidth_markup_in_a_cookie_name_is_folded_and_blocked() {
    assert_blocked(
        &shipped("blocking"),
        "GET / HTTP/1.1\r\nCookie: ＜script＞alert(1)＜/script＞=value\r\n\r\n".as_bytes(),
        "xss-101",
    );
}

#[test]
fn html5_tab_entity_inside_a_script_scheme_is_decoded() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?u=ja%26tab%3Bvascript%3Aalert(1) HTTP/1.1\r\n\r\n",
        "xss-103",
    );
}

#[test]
fn event_handler_in_the_user_agent_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET / HTTP/1.1\r\nUser-Agent: Bot/2.0 ' onerror=alert(1) '\r\n\r\n",
        "xss-102",
    );
}

#[test]
fn comments_inside_a_javascript_sink_do_not_hide_it() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?a=document%2F*x*%2F.%2F*y*%2Fcookie HTTP/1.1\r\n\r\n",
        "xss-106",
    );
}

#[test]
fn php_variable_function_through_nested_indexes_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?foo=$__[$_[1]](7) HTTP/1.1\r\n\r\n",
        "php-107",
    );
    assert_blocked(
        &shipped("blocking"),
        b"GET /?x=(%2F*c*%2Fsystem)(ls) HTTP/1.1\r\n\r\n",
        "php-111",
    );
}

#[test]
fn windows_if_comparison_without_spaces_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?foo=if%20/i%20a==b%20foo HTTP/1.1\r\n\r\n",
        "rce-108",
    );
}

#[test]
fn command_behind_a_wrapper_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?code=ti''me%20who HTTP/1.1\r\n\r\n",
        "rce-112",
    );
}

#[test]
fn mysql_executable_comment_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"GET /?id=9999+or+%7Bif+length((/*!5000select+username/*!50000from*/user))>0%7D HTTP/1.1\r\n\r\n",
        "sqli-123",
    );
}

#[test]
fn sql_keyword_in_a_json_key_is_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"; select\": \"foo\"}",
        "sqli-118",
    );
}

#[test]
fn prose_quoting_sql_injection_examples_is_not_blocked_by_the_signatures() {
    // The quote that breaks out of a string is the value's first one; a quoted example deep
    // inside prose is not a breakout.
    let e = shipped("blocking");
    let body = "var=The%20string%20%27susan%27%20is%20data.%20Imagine%20the%20attacker%20\
entered%20%27%20or%201%3D1%3B%20--%20instead.";
    let raw = format!(
        "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, ids) = verdict(&e, raw.as_bytes());
    for id in ["sqli-102", "sqli-108", "sqli-109"] {
        assert!(!ids.iter().any(|i| i == id), "{id} matched: {ids:?}");
    }
}

#[test]
fn tautology_in_an_xml_attribute_after_other_quotes_is_found() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /api HTTP/1.1\r\nContent-Type: application/xml\r\n\r\n\
<?xml version=\"1.0\"?><root><a probe=\"1234 OR 1=1\"></a></root>",
        "sqli-109",
    );
}

#[test]
fn entity_encoded_script_in_xml_text_is_decoded_and_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /api HTTP/1.1\r\nContent-Type: text/xml\r\n\r\n\
<msg><body>&lt;script&gt;alert(1)&lt;/script&gt;</body></msg>",
        "xss-101",
    );
}

#[test]
fn xml_text_split_by_a_child_element_is_joined_and_blocked() {
    assert_blocked(
        &shipped("blocking"),
        b"POST /api HTTP/1.1\r\nContent-Type: application/xml\r\n\r\n\
<a>&lt;scr<b/>ipt src=//e.vil/x.js&gt;&lt;/scr<b/>ipt&gt;</a>",
        "xss-101",
    );
}

#[test]
fn c_style_comparison_and_chat_arrows_are_not_attacks() {
    let e = shipped("blocking");
    for q in [
        "if%20(a%20%3D%3D%20b)%20%7B%20return%20a%3B%20%7D",
        "step%201%20--%3E%20step%202",
    ] {
        let raw = format!("GET /?q={q} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (v, ids) = verdict(&e, raw.as_bytes());
        assert_eq!((v, ids), (Verdict::Pass, vec![]), "{q}");
    }
}
