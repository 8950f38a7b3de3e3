//! `tether-proxy` as a process: the stdin command protocol drives real faults on a TCP echo.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    t.elapsed()
}

#[tokio::test]
async fn stdin_commands_drive_the_proxy() {
    let upstream = echo_server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether-proxy"))
        .args(["--upstream", &upstream.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["address"].as_str().unwrap().to_owned();
    let mut cmd = |c: &str| {
        writeln!(stdin, "{c}").unwrap();
        stdin.flush().unwrap();
        let mut r = String::new();
        out.read_line(&mut r).unwrap();
        r.trim().to_owned()
    };

    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert!(round_trip(&mut s).await < Duration::from_millis(150));
    assert_eq!(cmd("delay 100"), "ok");
    assert!(round_trip(&mut s).await >= Duration::from_millis(200));
    assert_eq!(cmd("delay 0"), "ok");
    assert_eq!(cmd("slice 1"), "ok");
    assert!(round_trip(&mut s).await < Duration::from_secs(5));
    assert_eq!(cmd("cut"), "ok");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "a cut connection ends");
    assert_eq!(cmd("rst on"), "ok");
    let mut s = TcpStream::connect(&addr).await.unwrap();
    round_trip(&mut s).await;
    assert_eq!(cmd("cut"), "ok");
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        r.map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(cmd("connections"), "2");
    assert!(cmd("frobnicate").starts_with("error:"));
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}
