//! Runs the fake model API on plain HTTP and prints each request as it arrives (for
//! trying a real client against it on the host: `ANTHROPIC_BASE_URL=http://ADDR`).
#![allow(clippy::unwrap_used)]
#[tokio::main]
async fn main() {
    let api = test_support::ModelApi::start_plain("list-egress-routes").await;
    println!("listening on {}", api.addr());
    let mut seen = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let reqs = api.requests();
        for r in &reqs[seen..] {
            println!(
                "{} {} -> {:?} ({} bytes)",
                r.method,
                r.path,
                r.answer,
                r.body.len()
            );
            for (n, v) in &r.headers {
                println!("    {n}: {}", v.chars().take(100).collect::<String>());
            }
            println!(
                "    body: {}",
                r.text().chars().take(600).collect::<String>()
            );
        }
        seen = reqs.len();
        for p in api.protocol_problems() {
            println!("PROBLEM {p}");
        }
    }
}
