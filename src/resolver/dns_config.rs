//! The service config a DNS name publishes (gRFC A2): TXT records of
//! `_grpc_config.<host>` of the form `grpc_config=<JSON>`, where the JSON
//! is a list of choices, each a service config with conditions on the client
//! (`clientLanguage`, `percentage`, `clientHostname`). The first choice
//! whose conditions all hold is the channel's config.

use serde_json::Value;

/// The TXT record prefix that marks a service config (A2).
const PREFIX: &str = "grpc_config=";

/// The language this client answers to in `clientLanguage` (compared
/// case-insensitively, as gRPC does).
pub(crate) const CLIENT_LANGUAGE: &str = "rust";

/// What the choice rules test about this client.
pub(crate) struct Client<'a> {
    pub(crate) hostname: &'a str,
    /// Draws a number in 0..100 for each `percentage: p`, which matches
    /// when it is below `p`: a draw per choice, as gRPC-Go
    /// (`chosenByPercentage`) and C-core (`rand() % 100` in the loop) draw.
    pub(crate) percentile: &'a mut dyn FnMut() -> u32,
}

/// The service config (JSON) chosen from `records` (the TXT records, each's
/// strings joined): `Ok(None)` when no record is a `grpc_config=` or no
/// choice matches; an error, naming what is wrong, for a record that is not
/// a valid list of choices.
pub(crate) fn choose(
    records: &[String],
    client: &mut Client<'_>,
) -> Result<Option<String>, String> {
    let Some(json) = records.iter().find_map(|r| r.strip_prefix(PREFIX)) else {
        return Ok(None);
    };
    let choices: Value =
        serde_json::from_str(json).map_err(|e| format!("TXT grpc_config: not JSON: {e}"))?;
    let Value::Array(choices) = choices else {
        return Err("TXT grpc_config: not a list of choices".into());
    };
    // Every choice is checked before any is picked: one invalid choice,
    // even after the one that matches, discards the whole list (A2; C-core
    // and gRPC-Go decode the list whole).
    let mut parsed = Vec::with_capacity(choices.len());
    for (i, choice) in choices.iter().enumerate() {
        parsed.push(parse_choice(i, choice)?);
    }
    for choice in parsed {
        // A2: "If a field is absent or empty, it matches all clients"
        // (C-core alike; gRPC-Go matches none).
        if !choice.languages.is_empty()
            && !choice
                .languages
                .iter()
                .any(|l| l.eq_ignore_ascii_case(CLIENT_LANGUAGE))
        {
            continue;
        }
        if !choice.hostnames.is_empty() && !choice.hostnames.contains(&client.hostname) {
            continue;
        }
        if choice
            .percentage
            .is_some_and(|p| u64::from((client.percentile)()) >= p)
        {
            continue;
        }
        return Ok(Some(choice.config));
    }
    Ok(None)
}

/// One choice of a `grpc_config` list, checked.
struct Choice<'a> {
    languages: Vec<&'a str>,
    hostnames: Vec<&'a str>,
    percentage: Option<u64>,
    config: String,
}

fn parse_choice(i: usize, choice: &Value) -> Result<Choice<'_>, String> {
    let Value::Object(fields) = choice else {
        return Err(format!("TXT grpc_config[{i}]: not an object"));
    };
    let (mut languages, mut hostnames, mut percentage, mut config) =
        (Vec::new(), Vec::new(), None, None);
    // A null field is an absent one (proto3 JSON; gRPC-Go's decoding).
    for (key, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
        let at = |what: &str| format!("TXT grpc_config[{i}].{key}: {what}");
        // In any case: gRPC-Go decodes choices with encoding/json (its own
        // records spell "clientHostName"; A2 says "clientHostname").
        match key.to_ascii_lowercase().as_str() {
            "clientlanguage" => {
                languages = strings(value).ok_or_else(|| at("not a list of strings"))?;
            }
            "clienthostname" => {
                hostnames = strings(value).ok_or_else(|| at("not a list of strings"))?;
            }
            "percentage" => {
                let p = value
                    .as_u64()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| at("not an integer from 0 to 100"))?;
                percentage = Some(p);
            }
            "serviceconfig" => {
                if !value.is_object() {
                    return Err(at("not an object"));
                }
                config = Some(value.to_string());
            }
            // A2: a choice with a field it does not know is invalid.
            _ => return Err(at("unknown field")),
        }
    }
    Ok(Choice {
        languages,
        hostnames,
        percentage,
        config: config.ok_or_else(|| format!("TXT grpc_config[{i}]: no serviceConfig"))?,
    })
}

fn strings(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

/// This machine's host name, for `clientHostname` (empty if unknown).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(records: &[&str], hostname: &str, percentile: u32) -> Result<Option<String>, String> {
        let records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        choose(
            &records,
            &mut Client {
                hostname,
                percentile: &mut || percentile,
            },
        )
    }

    const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
    const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;

    #[test]
    fn first_matching_choice_wins() {
        let txt = format!(
            r#"grpc_config=[{{"clientLanguage":["go","java"],"serviceConfig":{PF}}},
                            {{"clientLanguage":["RUST"],"serviceConfig":{RR}}},
                            {{"serviceConfig":{PF}}}]"#
        );
        assert_eq!(
            pick(&["v=spf1", &txt], "h", 0).unwrap().as_deref(),
            Some(RR)
        );
    }

    #[test]
    fn percentage_and_hostname_conditions() {
        let txt = format!(
            r#"grpc_config=[{{"percentage":30,"clientHostname":["h1"],"serviceConfig":{RR}}},
                            {{"percentage":0,"serviceConfig":{PF}}}]"#
        );
        assert_eq!(pick(&[&txt], "h1", 29).unwrap().as_deref(), Some(RR));
        assert_eq!(pick(&[&txt], "h1", 30).unwrap(), None, "30 is not below 30");
        assert_eq!(
            pick(&[&txt], "h2", 0).unwrap(),
            None,
            "other host; 0% never"
        );
    }

    #[test]
    fn each_percentage_draws_its_own_number() {
        // [{50%: RR}, {50%: PF}]: the second is tested with a draw of its
        // own (gRPC-Go, C-core), so it can win where the first lost.
        let txt = format!(
            r#"grpc_config=[{{"percentage":50,"serviceConfig":{RR}}},
                            {{"percentage":50,"serviceConfig":{PF}}}]"#
        );
        let mut draws = [70, 20].into_iter();
        let mut client = Client {
            hostname: "h",
            percentile: &mut || draws.next().unwrap_or(99),
        };
        assert_eq!(choose(&[txt], &mut client).unwrap().as_deref(), Some(PF));
    }

    #[test]
    fn choice_fields_are_found_in_any_case() {
        let txt = format!(
            r#"grpc_config=[{{"clientHostName":["h1"],"ClientLanguage":["rust"],"serviceConfig":{RR}}},{{"ServiceConfig":{PF}}}]"#
        );
        assert_eq!(pick(&[&txt], "h1", 0).unwrap().as_deref(), Some(RR));
        assert_eq!(pick(&[&txt], "h2", 0).unwrap().as_deref(), Some(PF));
    }

    #[test]
    fn a_null_condition_is_no_condition() {
        let txt = format!(
            r#"grpc_config=[{{"clientLanguage":null,"percentage":null,"clientHostname":null,"serviceConfig":{RR}}}]"#
        );
        assert_eq!(pick(&[&txt], "h1", 99).unwrap().as_deref(), Some(RR));
    }

    /// A2: "If a field is absent or empty, it matches all clients".
    #[test]
    fn an_empty_condition_list_matches_every_client() {
        let txt = format!(
            r#"grpc_config=[{{"clientLanguage":[],"clientHostname":[],"serviceConfig":{RR}}}]"#
        );
        assert_eq!(pick(&[&txt], "h1", 99).unwrap().as_deref(), Some(RR));
    }

    #[test]
    fn no_record_is_no_config() {
        assert_eq!(pick(&[], "h", 0).unwrap(), None);
        assert_eq!(pick(&["other=1"], "h", 0).unwrap(), None);
    }

    #[test]
    fn invalid_choices_say_where() {
        for (txt, want) in [
            ("grpc_config={", "not JSON"),
            ("grpc_config={}", "not a list of choices"),
            ("grpc_config=[1]", "grpc_config[0]: not an object"),
            (
                r#"grpc_config=[{"percentage":101,"serviceConfig":{}}]"#,
                "[0].percentage",
            ),
            (
                r#"grpc_config=[{"clientLanguage":"rust","serviceConfig":{}}]"#,
                "[0].clientLanguage",
            ),
            (
                r#"grpc_config=[{"color":1,"serviceConfig":{}}]"#,
                "[0].color: unknown",
            ),
            (r#"grpc_config=[{"percentage":5}]"#, "[0]: no serviceConfig"),
        ] {
            let e = pick(&[txt], "h", 0).unwrap_err();
            assert!(e.contains(want), "{txt}: {e}");
        }
    }
}
