//! The CUDA backend's launches against its kernels' signatures, read as text: every `launch!`
//! in `src/backend/cuda/mod.rs` that names its kernel passes as many arguments as that kernel
//! takes in `kernels.cu`, and every kernel it names exists. A wrong count compiles on both
//! sides and would show only on a GPU, as wrong numbers; this runs everywhere.

use std::collections::HashMap;
use std::path::PathBuf;

fn read(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// The text from `open` (an index just past an opening bracket) to its closing bracket.
fn bracketed(text: &str, open: usize) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    for (i, ch) in text[open..].char_indices() {
        match ch {
            '"' => in_string = !in_string,
            '(' | '[' | '{' if !in_string => depth += 1,
            ')' | ']' | '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[open..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unclosed bracket at byte {open}");
}

/// Splits at the commas outside brackets, strings, turbofish generics (`::<a, b>`) and
/// closures' `|...|` argument lists; trailing empty parts (a trailing comma) are dropped.
fn top_level_parts(text: &str) -> Vec<String> {
    let (mut parts, mut current) = (Vec::new(), String::new());
    let (mut depth, mut angles, mut in_string, mut in_closure_args) = (0, 0, false, false);
    for ch in text.chars() {
        match ch {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '|' if depth == 0 => in_closure_args = !in_closure_args,
            '<' if current.ends_with("::") => angles += 1,
            '>' if angles > 0 => angles -= 1,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 && angles == 0 && !in_closure_args => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    parts.push(current);
    let mut parts: Vec<String> = parts.into_iter().map(|p| p.trim().to_string()).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

/// Each kernel's parameter count, from its `extern "C" __global__ void name(...)`.
fn kernel_params(cu: &str) -> HashMap<String, usize> {
    let marker = "extern \"C\" __global__ void ";
    cu.match_indices(marker)
        .map(|(at, _)| {
            let name_at = at + marker.len();
            let paren = name_at + cu[name_at..].find('(').unwrap();
            let name = cu[name_at..paren].trim().to_string();
            let open = paren + 1;
            // C parameter lists hold no closures or generics: count the commas.
            let params = bracketed(cu, open);
            let count = match params.trim() {
                "" | "void" => 0,
                p => p.split(',').count(),
            };
            (name, count)
        })
        .collect()
}

#[test]
fn every_named_launch_passes_its_kernels_parameter_count() {
    let params = kernel_params(&read("src/backend/cuda/kernels.cu"));
    assert!(params.len() > 40, "found only {} kernels", params.len());
    assert_eq!(params.get("fill_many_f32"), Some(&3));
    let rs = read("src/backend/cuda/mod.rs");
    let mut checked = 0;
    for (at, _) in rs.match_indices("launch!(") {
        let line = rs[..at].lines().count();
        let args = top_level_parts(bracketed(&rs, at + "launch!(".len()));
        if args.first().map(String::as_str) != Some("self") {
            continue; // the macro's definition
        }
        let Some(name) = args[1].strip_prefix('"').and_then(|n| n.strip_suffix('"')) else {
            continue; // a kernel chosen at run time
        };
        let Some(&want) = params.get(name) else {
            panic!("mod.rs line {line}: launches '{name}', which kernels.cu does not define");
        };
        assert_eq!(
            args.len() - 3,
            want,
            "mod.rs line {line}: '{name}' takes {want} parameters, the launch passes {:?}",
            &args[3..]
        );
        checked += 1;
    }
    assert!(checked >= 20, "checked only {checked} launches");
    println!("{checked} launches checked");
}

#[test]
fn the_splitter_keeps_closures_and_generics_whole() {
    assert_eq!(
        top_level_parts(
            "self, \"k\", cfg, a.map_or(0, |p| p.f(x, y)), &HashMap::<u8, u8>::new(), "
        ),
        [
            "self",
            "\"k\"",
            "cfg",
            "a.map_or(0, |p| p.f(x, y))",
            "&HashMap::<u8, u8>::new()"
        ]
    );
    assert_eq!(
        top_level_parts("&((a > b) as i32), match x { 1 => 2, _ => 3 }, c"),
        ["&((a > b) as i32)", "match x { 1 => 2, _ => 3 }", "c"]
    );
    assert_eq!(
        kernel_params("extern \"C\" __global__ void k(float* a, int n) {}")["k"],
        2
    );
}
