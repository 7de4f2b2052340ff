// The stand-in for Jira behind Tomcat (tests/e2e_tomcat.rs): answers every request with what it
// received, as JSON, like tests/support/echo.rs. Repeated headers are joined by ", ".
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.security.cert.X509Certificate;
import java.util.Collections;
import java.util.StringJoiner;

public class Echo extends HttpServlet {
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        StringJoiner headers = new StringJoiner(",", "{", "}");
        for (String name : Collections.list(req.getHeaderNames())) {
            headers.add(str(name.toLowerCase()) + ":" + str(String.join(", ", Collections.list(req.getHeaders(name)))));
        }
        X509Certificate[] chain = (X509Certificate[]) req.getAttribute("jakarta.servlet.request.X509Certificate");
        String client = chain == null ? "null" : str(chain[0].getSubjectX500Principal().getName());
        resp.setContentType("application/json");
        resp.setCharacterEncoding("UTF-8");
        resp.getWriter().write("{\"method\":" + str(req.getMethod()) + ",\"path\":" + str(req.getRequestURI())
                + ",\"query\":" + (req.getQueryString() == null ? "null" : str(req.getQueryString()))
                + ",\"remote_addr\":" + str(req.getRemoteAddr()) + ",\"local_port\":" + req.getLocalPort()
                + ",\"client_certificate\":" + client + ",\"headers\":" + headers + "}");
    }

    /** A JSON string: quotes, backslashes and control characters escaped. */
    private static String str(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20 || c == 0x7f) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }
}
