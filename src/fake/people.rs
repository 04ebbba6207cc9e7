//! The fake project's users, shared by every endpoint that names them (the user export,
//! list members, per-user events), so that they all agree.

/// The email of user `i`: mostly plain ASCII, some with unicode local parts or `+` tags.
pub fn email(seed: u64, i: u32) -> String {
    match (seed.wrapping_add(i as u64)) % 23 {
        0 => format!("ユーザー{i}@example.jp"),
        1 => format!("user{i}+tag@example.com"),
        2 => format!("müller.{i}@example.de"),
        _ => format!("user{i}@example.com"),
    }
}

/// The userId of user `i`: a hybrid project, so about a third of the users have none.
pub fn user_id(seed: u64, i: u32) -> Option<String> {
    if seed
        .wrapping_mul(31)
        .wrapping_add(u64::from(i))
        .is_multiple_of(3)
    {
        None
    } else {
        Some(format!("uid-{i:06}"))
    }
}
