//! Where in the JSON text a parse error is, as the member path a configuration message names.

/// The path (`providers[0].timeout_ms`) of the member at `line`:`column` of `json`, where
/// serde_json reports an error: the objects and arrays still open there, and the last key of
/// each. (It replaces serde_path_to_error, whose wrapping of every deserializer cost 76 KB of
/// the .wasm, issue 7.)
pub(super) fn json_path_at(json: &[u8], line: usize, column: usize) -> String {
    enum Open {
        Object { key: Option<String>, in_key: bool },
        Array(usize),
    }
    let line_start = if line <= 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(json.len(), |(i, _)| i + 1)
    };
    let end = line_start.saturating_add(column).min(json.len());
    let mut open: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < end {
        match json[i] {
            b'{' => open.push(Open::Object {
                key: None,
                in_key: true,
            }),
            b'[' => open.push(Open::Array(0)),
            b'}' | b']' => drop(open.pop()),
            b',' => match open.last_mut() {
                Some(Open::Array(index)) => *index += 1,
                Some(Open::Object { in_key, .. }) => *in_key = true,
                None => {}
            },
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Open::Object {
                    key,
                    in_key: in_key @ true,
                }) = open.last_mut()
                {
                    let raw = json.get(start..=i).unwrap_or_default();
                    *key = Some(
                        serde_json::from_slice::<String>(raw)
                            .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()),
                    );
                    *in_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &open {
        match frame {
            Open::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Open::Object { key: None, .. } => {}
            Open::Array(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_positions_become_member_paths() {
        let text = "{\"rules\": [{\"path_prefix\": \"/\"},\n {\"auth\": 5, \"x\": [1, {\"y\": true}]}],\n \"realm\": \"a\\\"b\"}";
        let at = |needle: &str| {
            let offset = text.find(needle).unwrap() + needle.len();
            let line = text[..offset].matches('\n').count() + 1;
            let column = offset - text[..offset].rfind('\n').map_or(0, |n| n + 1);
            json_path_at(text.as_bytes(), line, column)
        };
        assert_eq!(at("\"/\""), "rules[0].path_prefix");
        assert_eq!(at("5"), "rules[1].auth");
        assert_eq!(at("true"), "rules[1].x[1].y");
        assert_eq!(at("\"a\\\"b\""), "realm");
        assert_eq!(json_path_at(b"{}", 1, 0), "");
    }
}
